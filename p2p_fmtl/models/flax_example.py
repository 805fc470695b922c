"""Example modules for ``model.name = "flax"`` / ``"equinox"`` (see :mod:`.adapters`).

::

    [model]
    name = "flax"
    module = "p2p_fmtl.models.flax_example:FlaxMLP"     # linen
    # module = "p2p_fmtl.models.flax_example:NNXMLP"    # nnx (takes rngs)
    kwargs = '{"hidden": 64}'

    [model]
    name = "equinox"
    module = "p2p_fmtl.models.flax_example:EqxMLP"

Each is a one-hidden-layer MLP on flattened inputs. The linen and nnx modules take a
batch ``(B, *input_shape)``; the equinox module takes one sample (the adapter vmaps it).
A class is defined only if its library is installed.
"""

from __future__ import annotations

import math

import jax

try:
    import flax.linen as nn
    from flax import nnx
except ImportError:  # pragma: no cover - flax is an optional extra
    nn = nnx = None

try:
    import equinox as eqx
except ImportError:  # pragma: no cover - equinox is an optional extra
    eqx = None


if nn is not None:

    class FlaxMLP(nn.Module):
        """Linen: ``FlaxMLP(out_dim, hidden=64)``; input sizes are inferred at init."""

        out_dim: int
        hidden: int = 64

        @nn.compact
        def __call__(self, x):
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(self.hidden)(x))
            return nn.Dense(self.out_dim)(x)

    class NNXMLP(nnx.Module):
        """nnx: ``NNXMLP(out_dim, input_shape=..., hidden=64, rngs=...)``."""

        def __init__(self, out_dim: int, *, input_shape, hidden: int = 64, rngs):
            self.fc1 = nnx.Linear(math.prod(input_shape), hidden, rngs=rngs)
            self.fc2 = nnx.Linear(hidden, out_dim, rngs=rngs)

        def __call__(self, x):
            x = x.reshape(x.shape[0], -1)
            return self.fc2(jax.nn.relu(self.fc1(x)))


if eqx is not None:

    class EqxMLP(eqx.Module):
        """Equinox: ``EqxMLP(out_dim, input_shape=..., hidden=64, key=...)``, one sample."""

        mlp: eqx.nn.MLP

        def __init__(self, out_dim: int, *, input_shape, hidden: int = 64, key):
            self.mlp = eqx.nn.MLP(math.prod(input_shape), out_dim, hidden, depth=1, key=key)

        def __call__(self, x):
            return self.mlp(x.reshape(-1))
