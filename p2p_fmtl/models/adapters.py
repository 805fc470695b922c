"""Any Flax (linen or nnx) or Equinox model as a pure ``(init, apply)`` pair.

Config::

    [model]
    name = "flax"                                   # or "equinox"
    module = "p2p_fmtl.models.flax_example:FlaxMLP" # "package.module:attr"
    kwargs = '{"hidden": 64}'                       # a JSON object of extra arguments

**One calling convention.** ``attr`` (a module class or a factory function) is called with
keyword arguments only::

    attr(out_dim=out_dim, [input_shape=input_shape,] [rngs=... | key=...,] **json.loads(kwargs))

* ``input_shape`` (one sample's shape, a tuple) is passed only if ``attr`` has a parameter of
  that name (nnx and Equinox layers need their input sizes; linen infers them);
* **flax / linen** (``api = "linen"``): ``attr(...)`` returns a ``flax.linen.Module``
  applied to a whole batch ``(B, *input_shape)``; ``init(key)`` is
  ``module.init(key, zeros((1, *input_shape)))["params"]`` and ``apply`` is
  ``module.apply({"params": params}, x)``. Only the ``params`` collection is supported
  (no ``batch_stats``; dropout / other RNG streams are not provided);
* **flax / nnx** (``api = "nnx"``): ``attr(..., rngs=nnx.Rngs(key))`` returns an
  ``nnx.Module`` applied to a batch; its ``nnx.Param`` variables are the parameters (a
  nested dict from ``nnx.to_pure_dict``), everything else (RNG counters, batch
  statistics) is frozen at its value in a module built from ``PRNGKey(0)``.
  ``api = "auto"`` (default) means nnx if ``attr`` has a parameter named ``rngs``, else linen;
* **equinox**: ``attr(..., key=key)`` returns an ``eqx.Module``; the parameters are its
  array leaves (``eqx.partition(model, eqx.is_array)``; paths such as ``layers/0/weight``),
  the rest is static. As is the Equinox custom, the module is called on ONE sample and
  vmapped over the batch; ``per_sample = false`` calls it on the whole batch instead.

**A config naming a module is code.** ``module = "package.module:attr"`` imports
``package.module``, which runs its top-level code, as ``python -c "import package.module"``
would: run only configs you trust, as you would run only scripts you trust.  What is then
*called* is checked first: ``attr`` must be a class that builds a module (a subclass of
``flax.linen.Module``, ``flax.nnx.Module`` or ``equinox.Module``) or a function marked as a
model factory with :func:`model_factory`::

    from p2p_fmtl.models import model_factory

    @model_factory
    def wide_mlp(out_dim, *, input_shape, key):
        return EqxMLP(out_dim, input_shape=input_shape, hidden=512, key=key)

Anything else (``os:system``, ``builtins:eval``, a plain function) is refused with one
line, without being called.

The dummy input for linen's ``init`` is ``float32`` zeros. flax and equinox are imported
lazily: without them the rest of the package works, and these models raise a
``ConfigError`` naming the pip extra (``pip install "p2p-fmtl[flax]"``).
Examples: :mod:`p2p_fmtl.models.flax_example`.
"""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

import jax
import jax.numpy as jnp

from ..errors import ConfigError


def _import(package: str, name: str):
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ConfigError(
            f"model.name: got {name!r}, but {package.split('.')[0]} is not installed; "
            f'expected it installed: pip install "p2p-fmtl[{name}]"'
        ) from None


FACTORY_MARK = "__p2p_fmtl_model_factory__"
_WHAT = {
    "flax": "a flax.linen.Module or flax.nnx.Module subclass",
    "equinox": "an equinox.Module subclass",
}


def model_factory(fn):
    """Mark ``fn`` as a model factory, so that ``model.module`` may name it (see the
    module doc: only module classes and marked functions are called)."""
    if not callable(fn):
        raise TypeError(f"model_factory: got {type(fn).__name__}, expected a function")
    setattr(fn, FACTORY_MARK, True)
    return fn


def _module_classes() -> tuple[type, ...]:
    """The module base classes of the installed libraries (flax linen and nnx, equinox)."""
    bases: list[type] = []
    try:
        import flax.linen as nn
        from flax import nnx

        bases += [nn.Module, nnx.Module]
    except ImportError:  # pragma: no cover - flax is an optional extra
        pass
    try:
        import equinox as eqx

        bases.append(eqx.Module)
    except ImportError:  # pragma: no cover - equinox is an optional extra
        pass
    return tuple(bases)


def builds_a_module(obj) -> bool:
    """Whether ``obj`` may be called to build a model: a flax / equinox module class or a
    function marked with :func:`model_factory`."""
    if inspect.isclass(obj):
        bases = _module_classes()
        return bool(bases) and issubclass(obj, bases)
    return callable(obj) and getattr(obj, FACTORY_MARK, False) is True


def load_attr(spec: str, name: str):
    """The object named by ``"package.module:attr"`` (``attr`` may be dotted): importing
    the module runs its code; the object is returned only if :func:`builds_a_module`."""
    expected = '"package.module:attr" naming an importable class or function'
    if not isinstance(spec, str) or not spec:
        raise ConfigError(
            f"model.module: got {spec!r}, expected {expected} (model.name = {name!r} needs it)"
        )
    mod_name, sep, attr = spec.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"model.module: got {spec!r}, expected {expected}")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"model.module: got {spec!r}, expected {expected} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(
                f"model.module: got {spec!r}, expected {expected} "
                f"({mod_name!r} has no attribute {part!r})"
            )
        obj = getattr(obj, part)
    if not builds_a_module(obj):
        raise ConfigError(
            f"model.module: got {spec!r}, a {type(obj).__name__}; expected "
            f"{_WHAT.get(name, 'a module class')} (or a function marked with "
            "@p2p_fmtl.models.model_factory); it was not called"
        )
    return obj


def _kwargs(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ConfigError(
            f"model.kwargs: got {text!r}, expected a JSON object as a string, "
            "e.g. '{\"hidden\": 64}'"
        )
    return value


def _accepts(fn, name: str) -> bool:
    """Whether ``fn`` (for a class: its signature or its ``__init__``'s) has a parameter
    ``name`` (nnx's metaclass hides ``__init__`` behind ``(*args, **kwargs)``)."""
    targets = [fn, fn.__init__] if isinstance(fn, type) else [fn]
    for t in targets:
        try:
            if name in inspect.signature(t).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


def _factory(attr, input_shape, out_dim, kwargs):
    """``attr`` as a function of its RNG argument(s) only, per the calling convention."""
    base = {"out_dim": out_dim, **kwargs}
    if _accepts(attr, "input_shape"):
        base["input_shape"] = tuple(input_shape)
    spec = getattr(attr, "__qualname__", repr(attr))

    def call(**rng):
        try:
            return attr(**base, **rng)
        except TypeError as e:
            raise ConfigError(
                f"model.kwargs: calling {spec}(**{sorted({**base, **rng})}) failed: {e}"
            ) from None

    return call


def flax_model(
    input_shape: tuple[int, ...],
    out_dim: int,
    *,
    module: str = "",
    kwargs: str = "{}",
    api: str = "auto",
):
    """A flax linen or nnx module (``module = "package.module:attr"``); see the module doc."""
    _import("flax", "flax")
    if api not in ("auto", "linen", "nnx"):
        raise ConfigError(f"model.api: got {api!r}, expected one of 'auto', 'linen', 'nnx'")
    attr = load_attr(module, "flax")
    make = _factory(attr, input_shape, out_dim, _kwargs(kwargs))
    if api == "auto":
        api = "nnx" if _accepts(attr, "rngs") else "linen"
    if api == "nnx":
        return _nnx_pair(make)
    return _linen_pair(make(), module, input_shape)


def _linen_pair(mod, spec, input_shape):
    import flax.linen as nn

    if not isinstance(mod, nn.Module):
        raise ConfigError(
            f"model.module: got {spec!r}, expected a flax.linen.Module (or a factory "
            f"returning one), not {type(mod).__name__}; nnx modules take an 'rngs' argument"
        )
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    variables = jax.eval_shape(mod.init, jax.random.PRNGKey(0), dummy)
    extra = sorted(set(variables) - {"params"})
    if extra:
        raise ConfigError(
            f"model.module: got {spec!r}, whose variables include {extra}; expected a module "
            "with only 'params' (no batch statistics or other mutable collections)"
        )

    def init(key):
        return mod.init(key, dummy)["params"]

    def apply(params, x):
        return mod.apply({"params": params}, x)

    return init, apply


def _nnx_pair(make):
    from flax import nnx

    template = make(rngs=nnx.Rngs(0))
    if not isinstance(template, nnx.Module):
        raise ConfigError(
            f"model.api: got 'nnx', but the factory returned {type(template).__name__}, "
            "expected a flax.nnx.Module"
        )
    graphdef, params0, rest = nnx.split(template, nnx.Param, ...)

    def init(key):
        m = make(rngs=nnx.Rngs(key))
        return nnx.to_pure_dict(nnx.split(m, nnx.Param, ...)[1])

    def apply(params, x):
        state = jax.tree.map(lambda v: v, params0)  # a fresh copy of the template
        nnx.replace_by_pure_dict(state, params)
        return nnx.merge(graphdef, state, rest)(x)

    return init, apply


def equinox_model(
    input_shape: tuple[int, ...],
    out_dim: int,
    *,
    module: str = "",
    kwargs: str = "{}",
    per_sample: bool = True,
):
    """An equinox module (``module = "package.module:attr"``); see the module doc."""
    eqx = _import("equinox", "equinox")
    if not isinstance(per_sample, bool):
        raise ConfigError(f"model.per_sample: got {per_sample!r}, expected true or false")
    attr = load_attr(module, "equinox")
    make = _factory(attr, input_shape, out_dim, _kwargs(kwargs))
    template = make(key=jax.random.PRNGKey(0))
    if not isinstance(template, eqx.Module):
        raise ConfigError(
            f"model.module: got {module!r}, expected an equinox.Module (or a factory "
            f"returning one), not {type(template).__name__}"
        )
    _, static = eqx.partition(template, eqx.is_array)

    def init(key):
        return eqx.partition(make(key=key), eqx.is_array)[0]

    def apply(params, x):
        m = eqx.combine(params, static)
        return jax.vmap(m)(x) if per_sample else m(x)

    return init, apply
