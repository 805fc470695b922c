"""A tiny causal transformer language model with LoRA adapters.

Input: int tokens ``x`` of shape ``(B, T)`` with ``T <= max_len`` (float inputs are cast);
output: next-token logits ``(B, T, V)`` with ``V = out_dim`` (the vocabulary). Pair it with
the ``"lm"`` task (:mod:`p2p_fmtl.tasks`).

Architecture (GPT-style, pre-LN): token embedding + learned positional embedding, ``layers``
blocks of ``x + attn(LN(x))`` and ``x + mlp(LN(x))`` (``heads`` heads, causal mask, GELU MLP
of width ``mlp_ratio * d_model``), a final LayerNorm and an **untied** output head
``head: d_model -> V``.

Parameters are ``{"base": {...}, "lora": {...}}``:

* ``base``: ``tok_emb (V, d)``, ``pos_emb (max_len, d)``, ``block_i/{ln1, q, k, v, o, ln2,
  mlp_in, mlp_out}``, ``ln_f``, ``head``; dense layers are ``{"w", "b"}``, LayerNorms
  ``{"scale", "bias"}``.
* ``lora``: ``block_i/<target>/{"a" (d_in, r), "b" (r, d_out)}`` for every target in
  ``lora_targets`` (any of ``q, k, v, o, mlp_in, mlp_out``; ``head`` adds an adapter on the
  output head as ``lora/head``). The adapted layer computes
  ``x W + b + (alpha / r) · (x A) B`` (Hu et al. 2021): ``A ~ N(0, 1/d_in)``, ``B = 0``, so
  a fresh adapter leaves the base model's outputs unchanged.

``freeze_base = true`` (default) builds ``base`` from ``PRNGKey(base_seed)`` whatever the
node's init key (every node holds the same pretrained-like base) and wraps it in
``stop_gradient`` so it gets exactly zero gradient; only the adapters learn. Share them with
``algorithm.shared = ["lora"]`` (gossip, byte ledger and consensus distance then see only
the adapters). Note: an optimizer with ``weight_decay > 0`` still decays the frozen base
weights (decoupled decay does not use gradients), so use ``weight_decay = 0`` with a frozen
base. ``freeze_base = false`` initialises and trains everything from the node's key.
``lora_rank = 0`` gives a plain transformer (``lora`` is then empty).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..errors import ConfigError

TARGETS = ("q", "k", "v", "o", "mlp_in", "mlp_out", "head")
DEFAULT_TARGETS = "q,k,v,o,mlp_in,mlp_out"


def _int(field: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"model.{field}: got {value!r}, expected an integer >= {lo}")
    return value


def parse_targets(targets) -> tuple[str, ...]:
    """``"q,k,v"`` or ``["q", "k", "v"]`` -> ``("q", "k", "v")``, checked against TARGETS."""
    if isinstance(targets, str):
        items = [t.strip() for t in targets.split(",") if t.strip()]
    elif isinstance(targets, list | tuple) and all(isinstance(t, str) for t in targets):
        items = list(targets)
    else:
        items = None
    if items is None or any(t not in TARGETS for t in items):
        raise ConfigError(
            f"model.lora_targets: got {targets!r}, expected a comma-separated string of "
            f"{', '.join(TARGETS)}"
        )
    return tuple(dict.fromkeys(items))


def _dense(key, d_in, d_out, std=0.02):
    return {"w": jax.random.normal(key, (d_in, d_out)) * std, "b": jnp.zeros((d_out,))}


def _ln(d):
    return {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))}


def _layer_norm(p, x, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def tiny_lm(
    input_shape: tuple[int, ...],
    out_dim: int,
    *,
    d_model: int = 32,
    layers: int = 2,
    heads: int = 2,
    mlp_ratio: int = 4,
    max_len: int = 64,
    lora_rank: int = 4,
    lora_alpha: float = 8.0,
    lora_targets: str = DEFAULT_TARGETS,
    freeze_base: bool = True,
    base_seed: int = 0,
):
    """A small causal transformer LM (pre-LN, learned positions, untied head) with LoRA.

    ``lora_targets`` is a comma-separated string (or a list from Python) of
    ``q, k, v, o, mlp_in, mlp_out, head``; the LoRA scale is ``lora_alpha / lora_rank``.
    """
    for field, value, lo in (
        ("d_model", d_model, 1),
        ("layers", layers, 0),
        ("heads", heads, 1),
        ("mlp_ratio", mlp_ratio, 1),
        ("max_len", max_len, 1),
        ("lora_rank", lora_rank, 0),
        ("base_seed", base_seed, 0),
    ):
        _int(field, value, lo)
    if d_model % heads:
        raise ConfigError(
            f"model.heads: got {heads}, expected a divisor of model.d_model = {d_model}"
        )
    if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, int | float) or lora_alpha <= 0:
        raise ConfigError(f"model.lora_alpha: got {lora_alpha!r}, expected a number in (0, inf)")
    if not isinstance(freeze_base, bool):
        raise ConfigError(f"model.freeze_base: got {freeze_base!r}, expected true or false")
    targets = parse_targets(lora_targets) if lora_rank else ()
    if len(input_shape) != 1:
        raise ConfigError(
            f"model.name: got 'tiny_lm', but the inputs have shape {tuple(input_shape)}; "
            "expected token sequences of shape (T,)"
        )
    if input_shape[0] > max_len:
        raise ConfigError(
            f"model.max_len: got {max_len}, expected at least the sequence length {input_shape[0]}"
        )
    V, d, H = out_dim, d_model, heads
    dh, dm = d // H, mlp_ratio * d
    scale = float(lora_alpha) / lora_rank if lora_rank else 0.0
    shapes = {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "mlp_in": (d, dm)}
    shapes |= {"mlp_out": (dm, d), "head": (d, V)}

    # every leaf as (path, shape, init): one normal draw fills all random leaves (fast to
    # compile: a per-leaf draw costs seconds of XLA time on CPU)
    out_std = 0.02 / math.sqrt(2 * max(layers, 1))  # GPT-2's scaled residual projections
    base_spec = [(("tok_emb",), (V, d), 0.02), (("pos_emb",), (max_len, d), 0.02)]
    for i in range(layers):
        blk = f"block_{i}"
        for ln in ("ln1", "ln2"):
            base_spec += [((blk, ln, "scale"), (d,), "ones"), ((blk, ln, "bias"), (d,), 0.0)]
        for name in ("q", "k", "v", "o", "mlp_in", "mlp_out"):
            std = out_std if name in ("o", "mlp_out") else 0.02
            base_spec += [((blk, name, "w"), shapes[name], std)]
            base_spec += [((blk, name, "b"), (shapes[name][1],), 0.0)]
    base_spec += [(("ln_f", "scale"), (d,), "ones"), (("ln_f", "bias"), (d,), 0.0)]
    base_spec += [(("head", "w"), (d, V), 0.02), (("head", "b"), (V,), 0.0)]
    lora_spec = []
    for t in targets:
        blocks = [("head",)] if t == "head" else [(f"block_{i}", t) for i in range(layers)]
        d_in, d_out = shapes[t]
        for path in blocks:
            lora_spec += [((*path, "a"), (d_in, lora_rank), 1.0 / math.sqrt(d_in))]
            lora_spec += [((*path, "b"), (lora_rank, d_out), 0.0)]

    def from_spec(key, spec):
        sizes = [math.prod(shape) for _, shape, std in spec if isinstance(std, float) and std]
        flat = jax.random.normal(key, (sum(sizes),))
        tree, offset = {}, 0
        for path, shape, std in spec:
            if std == "ones":
                leaf = jnp.ones(shape)
            elif std == 0.0:
                leaf = jnp.zeros(shape)
            else:
                n = math.prod(shape)
                leaf = flat[offset : offset + n].reshape(shape) * std
                offset += n
            node = tree
            for p in path[:-1]:
                node = node.setdefault(p, {})
            node[path[-1]] = leaf
        return tree

    frozen = None
    if freeze_base:  # built once, outside any trace: every node gets these very arrays
        with jax.ensure_compile_time_eval():
            frozen = from_spec(jax.random.PRNGKey(base_seed), base_spec)

    def init(key):
        k_base, k_lora = jax.random.split(key)
        base = frozen if freeze_base else from_spec(k_base, base_spec)
        return {"base": base, "lora": from_spec(k_lora, lora_spec)}

    def dense(base_p, lora_p, x):
        y = x @ base_p["w"] + base_p["b"]
        if lora_p is not None:
            y = y + scale * ((x @ lora_p["a"]) @ lora_p["b"])
        return y

    def apply(params, x):
        base, lora = params["base"], params["lora"]
        if freeze_base:
            base = jax.lax.stop_gradient(base)
        tokens = x.astype(jnp.int32)
        B, T = tokens.shape
        h = base["tok_emb"][tokens] + base["pos_emb"][:T]
        causal = jnp.tril(jnp.ones((T, T), dtype=bool))
        for i in range(layers):
            bp, lp = base[f"block_{i}"], lora.get(f"block_{i}", {})
            a = _layer_norm(bp["ln1"], h)
            q, k, v = (dense(bp[n], lp.get(n), a).reshape(B, T, H, dh) for n in "qkv")
            att = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(dh)
            att = jax.nn.softmax(jnp.where(causal, att, -1e30), axis=-1)
            o = jnp.einsum("bhts,bshd->bthd", att, v).reshape(B, T, d)
            h = h + dense(bp["o"], lp.get("o"), o)
            m = jax.nn.gelu(dense(bp["mlp_in"], lp.get("mlp_in"), _layer_norm(bp["ln2"], h)))
            h = h + dense(bp["mlp_out"], lp.get("mlp_out"), m)
        h = _layer_norm(base["ln_f"], h)
        return dense(base["head"], lora.get("head"), h)

    return init, apply
