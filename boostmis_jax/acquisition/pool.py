"""One chunked forward over the pool whose outputs (logits, probabilities, embeddings, entropy and, when
asked, VAT scores) are shared by every selector, so the model runs once per chunk whatever is selected."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding

from boostmis_jax.acquisition.layout import constrain_rows, from_steps, infer_shards, row_sharding, to_steps
from boostmis_jax.acquisition.vat import VAT_STREAM, ApplyFn, VatParams, forward_and_vat
from boostmis_jax.errors import UserError


def check_chunk(n: int, chunk: int) -> None:
    """Pool passes use a fixed chunk shape (one compile); padding is the caller's job."""
    if chunk < 1 or n % chunk != 0:
        raise UserError(f"al.chunk: pool size {n} is not a multiple of chunk {chunk}; pad the pool to a "
                        f"multiple of al.chunk (mark padded rows invalid) or pick a chunk that divides {n}")


def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Shannon entropy (nats) per row."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def chunked_pass(apply_fn: ApplyFn, variables: Any, x: jax.Array, valid: jax.Array, key: jax.Array | None,
                 *, chunk: int, vat: VatParams | None = None, shards: int | None = None,
                 rows_sharding: NamedSharding | None = None) -> dict:
    """lax.map over chunks; returns logits, probs, emb, entropy (+ vat) with zeros on invalid rows.

    `key` is the acquisition key (VAT noise: row r uses fold_in(fold_in(key, VAT_STREAM), r)).
    `shards`/`rows_sharding`: see layout.py (inferred from a concrete `x` when None)."""
    n = x.shape[0]
    check_chunk(n, chunk)
    if shards is None:
        shards = infer_shards(x, chunk)
        rows_sharding = row_sharding(x, shards)
    rs = rows_sharding
    rows = jnp.arange(n, dtype=jnp.int32)
    valid = jnp.asarray(valid, dtype=bool)
    vat_key = jax.random.fold_in(key, VAT_STREAM) if vat is not None else None

    def body(args: tuple) -> dict:
        xb, rb = (constrain_rows(a, rs) for a in args)
        if vat is None:
            logits, emb = apply_fn(variables, xb)
            out = {}
        else:
            logits, emb, _, score = forward_and_vat(apply_fn, variables, xb, rb, vat_key, vat)
            out = {"vat": score}
        out["logits"] = logits.astype(jnp.float32)
        out["emb"] = emb.reshape(emb.shape[0], -1).astype(jnp.float32)
        return {name: constrain_rows(v, rs) for name, v in out.items()}

    xs = constrain_rows(to_steps(x, shards, chunk), rs, 1)
    steps = jax.lax.map(body, (xs, constrain_rows(to_steps(rows, shards, chunk), rs, 1)))
    out = {name: from_steps(v, shards, chunk) for name, v in steps.items()}
    out["logits"] = jnp.where(valid[:, None], out["logits"], 0.0)
    out["emb"] = jnp.where(valid[:, None], out["emb"], 0.0)
    out["probs"] = jax.nn.softmax(out["logits"], axis=-1)
    out["entropy"] = jnp.where(valid, entropy_from_logits(out["logits"]), 0.0)
    if "vat" in out:
        out["vat"] = jnp.where(valid, out["vat"], 0.0)
    return out


_jit_pass = jax.jit(chunked_pass, static_argnums=(0,),
                    static_argnames=("chunk", "vat", "shards", "rows_sharding"))


def _statics(x: jax.Array, chunk: int) -> dict:
    check_chunk(x.shape[0], chunk)
    shards = infer_shards(x, chunk)
    return {"chunk": chunk, "shards": shards, "rows_sharding": row_sharding(x, shards)}


def pool_outputs(apply_fn: ApplyFn, variables: Any, x: jax.Array, valid: jax.Array, *, chunk: int) -> dict:
    """Eval-mode outputs for the whole pool: logits (N,C), probs (N,C), emb (N,E), entropy (N,).

    `apply_fn(variables, x_batch) -> (logits, emb)`; N must be a multiple of `chunk` (pad and mark padded
    rows invalid: their outputs are zeros, so garbage padding cannot leak NaNs into the scores).
    """
    return _jit_pass(apply_fn, variables, x, valid, None, **_statics(x, chunk))


def vat_scores(apply_fn: ApplyFn, variables: Any, x: jax.Array, valid: jax.Array, key: jax.Array, *,
               xi: float, eps: float, ip: int, chunk: int) -> jax.Array:
    """(N,) LDS scores KL(p(x) || p(x + eps*d_adv)), 0 on invalid rows; same numbers as score_pool's aus."""
    out = _jit_pass(apply_fn, variables, x, valid, key, vat=VatParams(float(xi), float(eps), int(ip)),
                    **_statics(x, chunk))
    return out["vat"]
