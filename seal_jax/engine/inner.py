"""The inner loop: a batch of self-edits, each trained into its own LoRA by one jitted, vmapped function.

A self-edit is a list of training documents. `pack_edits` pads E edits into

    tokens     int32 [E, N, S]   right-padded documents (N, S rounded up to buckets)
    loss_mask  int32 [E, N, S]   1 on tokens whose prediction is trained
    seq_valid  bool  [E, N]      False on padded documents
    lr  f32 [E], steps int32 [E]   per-edit hyperparameters: data, not compile-time constants

An edit's optimiser steps are HF Trainer's max_steps, ceil(epochs x ceil(docs / batch_size)), computed on the
host in Python floats as HF does: a fractional `epochs` (SEAL's self-edits may ask for 0.5) trains a partial
last pass, and the schedule runs over those steps.

`inner_train_one(base, edit, key, hparams)` initialises the LoRA and AdamW state inside jit, then
`lax.scan`s over a fixed number of steps. Step t of an edit trains on batch t mod steps-per-epoch of
epoch t // steps-per-epoch, in an order shuffled per epoch with the edit's key. Steps past the edit's own
count, or that hold no loss tokens, or whose loss, gradient or learning rate is non-finite (and every step
after that), keep LoRA *and* optimiser state unchanged (Adam would otherwise move on momentum alone).
`inner_train_edits` vmaps it over edits with the frozen base broadcast; `train_in_chunks` runs it chunk by
chunk so memory is bounded whatever E is.

Two things keep padding from costing compute. The scan length is bucketed (a multiple of 8) so different step
counts share one compiled program, and each step's sequence length is bucketed too: before the scan,
`step_plan` finds, for every step, the longest document any edit trains on then, and picks the shortest of
`length_buckets` prefix lengths that holds it (or "skip" past every edit's step count). The step runs under a
`lax.switch` on that unbatched index, on `tokens[:, :S_k]`: exact, since right padding past the last loss
token changes no loss (causal attention), and a short-document step no longer pays for the longest document.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from seal_jax.model.config import ModelConfig
from seal_jax.model.lora import LoraSpec, init_lora
from seal_jax.model.transformer import LORA_IMPLS, sequence_logprobs
from seal_jax.tokenizer import encode_example

log = logging.getLogger(__name__)

Document = Union[str, tuple[str, str]]  # plain text, or (prompt, completion)


@dataclasses.dataclass(frozen=True)
class InnerConfig:
    """Static settings of the inner update (SEAL knowledge defaults). Hashable: a jit static argument."""
    lora: LoraSpec = LoraSpec(rank=32, alpha=64.0, targets=("q_proj", "v_proj"))
    batch_size: int = 1
    schedule: str = "linear"        # linear | cosine | constant (HF Trainer's shapes)
    warmup_ratio: float = 0.0
    warmup_steps: int = 0           # > 0: this many warm-up steps, overriding warmup_ratio (HF's warmup_steps)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0      # HF Trainer's default clipping; 0 turns it off
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    loss_chunk: Optional[int] = 128  # positions per log-softmax chunk; None for one pass
    length_buckets: int = 4         # per-step sequence lengths S/n, 2S/n, ..., S (1: every step at full S)
    step_form: str = "vmapped"      # vmapped (this module) | packed (`packed.py`: compute follows real tokens)
    lora_impl: str = "auto"         # packed steps' per-token LoRA: dense | ragged | auto (`transformer.LORA_IMPLS`)
    step_edits: int = 0             # packed: most edits a row trains per step, the adapters it carries (0: all its edits)
    remat: str = ""                 # the inner updates' per-layer remat (none | full | dots); "": the model's

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"inner schedule {self.schedule!r}; choose linear, cosine or constant")
        if self.batch_size < 1:
            raise ValueError(f"inner batch_size must be >= 1, got {self.batch_size}")
        if self.step_form not in ("vmapped", "packed"):
            raise ValueError(f"inner step_form {self.step_form!r}; choose vmapped or packed")
        if self.lora_impl not in LORA_IMPLS:
            raise ValueError(f"inner lora_impl {self.lora_impl!r}; choose one of {LORA_IMPLS}")
        if self.step_edits < 0:
            raise ValueError(f"inner step_edits must be >= 0 (0: a packed row carries all its edits), got {self.step_edits}")
        if self.remat not in ("", "none", "full", "dots"):
            raise ValueError(f"inner remat {self.remat!r}; choose none, full, dots or '' (the model's)")
        if self.length_buckets < 1:
            raise ValueError(f"inner length_buckets must be >= 1, got {self.length_buckets}")
        if self.warmup_steps < 0:
            raise ValueError(f"inner warmup_steps must be >= 0, got {self.warmup_steps}")


# ---- packing (host side, numpy) -------------------------------------------------------------------


def round_up(n: int, multiple: int) -> int:
    return max(multiple, -(-int(n) // multiple) * multiple)


def bucket_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def tokenize_document(tok, doc: Document, loss: str = "all") -> tuple[list[int], list[int]]:
    """(tokens, loss_mask): text + EOS, no special tokens added. loss='output' trains only the completion."""
    if loss not in ("all", "output"):
        raise ValueError(f"loss mode {loss!r}; choose 'all' or 'output'")
    prompt, completion = ("", doc) if isinstance(doc, str) else doc
    tokens, mask = encode_example(tok, prompt, completion)
    return tokens, ([1] * len(tokens) if loss == "all" else mask)


@dataclasses.dataclass
class PackedEdits:
    tokens: np.ndarray      # int32 [E, N, S]
    loss_mask: np.ndarray   # int32 [E, N, S]
    seq_valid: np.ndarray   # bool [E, N]
    lr: np.ndarray          # float32 [E]
    epochs: np.ndarray      # float64 [E]: HF's num_train_epochs, a fraction trains part of the last pass
    edit_steps: np.ndarray  # int32 [E]: each edit's optimiser steps (`hf_max_steps`)
    steps: int              # scan length, >= every edit's edit_steps
    truncated: int = 0      # documents cut to the length limit

    @property
    def num_edits(self) -> int:
        return self.tokens.shape[0]

    def arrays(self) -> tuple[dict, dict]:
        return ({"tokens": self.tokens, "loss_mask": self.loss_mask, "seq_valid": self.seq_valid},
                {"lr": self.lr, "steps": self.edit_steps})

    def epoch_tokens(self) -> np.ndarray:
        """int [E]: each edit's real tokens in one epoch."""
        return np.where(self.seq_valid, _lengths(self.loss_mask), 0).sum(-1)

    def train_tokens(self) -> int:
        """Tokens actually trained on (real, non-pad), counting epochs (a fractional epoch pro rata)."""
        return int((self.epoch_tokens() * self.epochs).sum())


def _lengths(loss_mask: np.ndarray) -> np.ndarray:
    """Length of each right-padded row = 1 + index of its last loss token (documents end with EOS)."""
    S = loss_mask.shape[-1]
    last = np.where(loss_mask > 0, np.arange(S), -1).max(-1)
    return last + 1


def pack_edits(examples: Sequence[Sequence[tuple[list[int], list[int]]]], lr: Sequence[float],
               epochs: Sequence[float], *, batch_size: int = 1, max_len: int = 2048, len_multiple: int = 16,
               min_docs: int = 8, steps_multiple: int = 8) -> PackedEdits:
    """Pad E edits' tokenized documents into bucketed arrays. Documents over `max_len` are truncated.

    Shapes are bucketed so that later batches (the next round, an evaluation) reuse the compiled update: the
    document axis N to a power of two >= `min_docs` (a stored axis; a step reads `batch_size` rows of it),
    the scan length to a power of two, a multiple of `steps_multiple` (steps past every edit's count are
    skipped by the step plan, so they cost a branch, not a step), S to a multiple of `len_multiple`.
    """
    if not (len(examples) == len(lr) == len(epochs)):
        raise ValueError(f"pack_edits: {len(examples)} edits but {len(lr)} lr and {len(epochs)} epochs values")
    truncated = 0
    for ex in examples:
        truncated += sum(len(t) > max_len for t, _ in ex)
    if truncated:
        log.warning("%d training documents were longer than %d tokens and were truncated", truncated, max_len)
    longest = max([min(len(t), max_len) for ex in examples for t, _ in ex] or [1])
    E, N, S = len(examples), bucket_pow2(max([len(ex) for ex in examples] + [min_docs])), round_up(longest, len_multiple)
    tokens, mask = np.zeros((E, N, S), np.int32), np.zeros((E, N, S), np.int32)
    valid = np.zeros((E, N), bool)
    for e, ex in enumerate(examples):
        for n, (t, m) in enumerate(ex):
            t, m = t[:max_len], m[:max_len]
            tokens[e, n, :len(t)], mask[e, n, :len(m)], valid[e, n] = t, m, any(m[1:])
    if any(not math.isfinite(float(ep)) or ep < 0 for ep in epochs):
        raise ValueError(f"epochs must be finite and >= 0, got {list(epochs)}")
    edit_steps = np.asarray([hf_max_steps(int(v.sum()), ep, batch_size) for ep, v in zip(epochs, valid)], np.int32)
    steps = round_up(bucket_pow2(max(edit_steps.tolist() + [1])), steps_multiple)
    return PackedEdits(tokens, mask, valid, np.asarray(lr, np.float32), np.asarray(epochs, np.float64), edit_steps,
                       steps, truncated)


def hf_max_steps(n_docs: int, epochs: float, batch_size: int) -> int:
    """HF Trainer's optimiser steps for `epochs` over `n_docs` documents (trainer.set_initial_training_values:
    max_steps = ceil(num_train_epochs x num_update_steps_per_epoch), in Python floats); 0 without documents."""
    return math.ceil(float(epochs) * -(-n_docs // batch_size)) if n_docs else 0


def pad_edits(p: PackedEdits, num_edits: int) -> PackedEdits:
    """Append dummy edits (no documents, zero steps) up to `num_edits`."""
    extra = num_edits - p.num_edits
    if extra <= 0:
        return p
    pad = lambda x: np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)])
    return dataclasses.replace(p, tokens=pad(p.tokens), loss_mask=pad(p.loss_mask), seq_valid=pad(p.seq_valid),
                               lr=pad(p.lr), epochs=pad(p.epochs), edit_steps=pad(p.edit_steps))


def take_edits(p: PackedEdits, start: int, stop: int) -> PackedEdits:
    return dataclasses.replace(p, tokens=p.tokens[start:stop], loss_mask=p.loss_mask[start:stop],
                               seq_valid=p.seq_valid[start:stop], lr=p.lr[start:stop], epochs=p.epochs[start:stop],
                               edit_steps=p.edit_steps[start:stop])


# ---- the jitted update --------------------------------------------------------------------------


def lr_multiplier(icfg: InnerConfig, t, total):
    """HF Trainer's schedules: value at optimiser step t (0-based) of `total`, with `warmup_steps` warm-up steps
    when set, else ceil(ratio*total)."""
    total = jnp.maximum(total, 1).astype(jnp.float32)
    warm = jnp.float32(icfg.warmup_steps) if icfg.warmup_steps > 0 else jnp.ceil(icfg.warmup_ratio * total)
    t = t.astype(jnp.float32)
    warmup = t / jnp.maximum(warm, 1.0)
    progress = (t - warm) / jnp.maximum(total - warm, 1.0)
    after = {"linear": jnp.maximum(0.0, 1.0 - progress),
             "cosine": 0.5 * (1.0 + jnp.cos(jnp.pi * progress)),
             "constant": jnp.ones_like(progress)}[icfg.schedule]
    return jnp.where(t < warm, warmup, after)


def optimizer(icfg: InnerConfig) -> optax.GradientTransformation:
    """AdamW direction without the learning rate (applied per edit and step by the caller)."""
    parts = [optax.clip_by_global_norm(icfg.max_grad_norm)] if icfg.max_grad_norm > 0 else []
    parts += [optax.scale_by_adam(icfg.adam_b1, icfg.adam_b2, icfg.adam_eps)]
    if icfg.weight_decay:  # at 0 it would still read every parameter each step to add 0 x p
        parts += [optax.add_decayed_weights(icfg.weight_decay)]
    return optax.chain(*parts)


def keep_if(active, new, old):  # active: bool [] for this edit's step
    """Inactive steps leave parameters and Adam moments untouched."""
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)


def guarded_update(opt: optax.GradientTransformation, lora, opt_state, grads, lr, loss, active):
    """One edit's optimiser step, taken where `active` and finite; else its LoRA and AdamW state stay as they were.

    Finite means the loss, the gradient's global norm (clipping reads that norm too) and the learning rate: from
    finite state they give a finite AdamW step (its direction is bounded). Known before the update, the guard
    is a select inside AdamW's own pass over the state, not a second pass over the new parameters.
    Returns (lora, opt_state, finite bool [])."""
    finite = jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads)) & jnp.isfinite(lr)
    updates, new_state = opt.update(grads, opt_state, lora)
    new_lora = jax.tree.map(lambda p, u: p - lr * u, lora, updates)
    lora, opt_state = keep_if(active & finite, (new_lora, new_state), (lora, opt_state))
    return lora, opt_state, finite


def epoch_order(k_shuffle, seq_valid, epoch):  # seq_valid: bool [N] -> int [N], real documents first
    """This epoch's document order: a random permutation of the real documents, then the padding.

    Each document's sort key depends only on (key, epoch, its index), so padding never changes the order.
    """
    k = jax.random.fold_in(k_shuffle, epoch)
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(k, i)))(jnp.arange(seq_valid.shape[0]))
    return jnp.argsort(jnp.where(seq_valid, u, 2.0))


def batch_loss(lora, base, tokens, loss_mask, *, cfg: ModelConfig, icfg: InnerConfig):
    """Mean next-token NLL over the loss tokens of a batch (HF Trainer's reduction). tokens: [b, S]."""
    lp = sequence_logprobs(base, cfg, tokens, loss_mask, lora=lora, lora_scale=icfg.lora.scale, chunk=icfg.loss_chunk)
    n = jnp.sum(loss_mask[:, 1:])
    return -jnp.sum(lp) / jnp.maximum(n, 1), n


def steps_per_epoch(seq_valid, batch_size: int):  # seq_valid: bool [..., N] -> int32 [...]
    """Optimiser steps of one pass over an edit's documents (at least 1)."""
    n_docs = jnp.sum(seq_valid, axis=-1).astype(jnp.int32)
    return jnp.maximum((n_docs + batch_size - 1) // batch_size, 1)


def step_docs(k_shuffle, seq_valid, t, batch_size: int):  # -> idx int [bs], real bool [bs]
    """The documents an edit trains on at step t: batch t mod steps-per-epoch of epoch t // steps-per-epoch."""
    N, n_docs = seq_valid.shape[0], jnp.sum(seq_valid).astype(jnp.int32)
    per_epoch = steps_per_epoch(seq_valid, batch_size)
    order = epoch_order(k_shuffle, seq_valid, t // per_epoch)
    slot = (t % per_epoch) * batch_size + jnp.arange(batch_size)   # [bs] positions in this epoch's order
    return order[jnp.minimum(slot, N - 1)], slot < n_docs


def length_buckets(S: int, n: int) -> tuple[int, ...]:
    """Prefix lengths a step may run at: S/n, 2S/n, ..., S, rounded up to multiples of 16."""
    return tuple(sorted({min(S, round_up(-(-S * k // n), 16)) for k in range(1, n + 1)}))


def step_plan(edits, keys, hparams, *, icfg: InnerConfig, steps: int):  # -> int32 [steps]
    """Per step, the index of the shortest length bucket that holds every document trained then, or -1 where
    no edit has a step left. Computed over all edits, so the index is not batched under the edits' vmap."""
    S = edits["tokens"].shape[-1]
    sizes = jnp.asarray(length_buckets(S, icfg.length_buckets))
    lengths = jnp.max(jnp.where(edits["loss_mask"] > 0, jnp.arange(S), -1), -1) + 1   # [E, N] to the last loss token
    total = hparams["steps"]                                                                # [E]

    def need(key, seq_valid, length, total_e):  # one edit -> [steps] tokens needed (0 when inactive)
        k_shuffle = jax.random.split(key)[1]
        def at(t):
            idx, real = step_docs(k_shuffle, seq_valid, t, icfg.batch_size)
            return jnp.where(t < total_e, jnp.max(jnp.where(real, length[idx], 0)), -1)
        return jax.vmap(at)(jnp.arange(steps))

    longest = jnp.max(jax.vmap(need)(keys, edits["seq_valid"], lengths, total), axis=0)   # [steps]
    return jnp.where(longest < 0, -1, jnp.searchsorted(sizes, longest)).astype(jnp.int32)


def inner_train_one(base, edit, key, hparams, plan=None, *, cfg: ModelConfig, icfg: InnerConfig, steps: int):
    """Train one self-edit's LoRA. edit: tokens/loss_mask [N, S], seq_valid [N]; hparams: lr [], steps [] (int).

    plan: int [steps] from `step_plan` (not batched under vmap): the length bucket of each step, -1 to skip it;
    None runs every step at full length. Returns (lora, metrics) with metrics: loss [steps] (0 where
    inactive), active bool [steps], ok bool [].
    """
    tokens, loss_mask, seq_valid = edit["tokens"], edit["loss_mask"], edit["seq_valid"]
    total = hparams["steps"]
    k_init, k_shuffle = jax.random.split(key)
    lora = init_lora(k_init, cfg, icfg.lora)
    opt = optimizer(icfg)
    loss_and_grad = jax.value_and_grad(functools.partial(batch_loss, cfg=cfg, icfg=icfg), has_aux=True)

    def step(carry, t, S: int):
        lora, opt_state, ok = carry
        idx, real = step_docs(k_shuffle, seq_valid, t, icfg.batch_size)
        mask = loss_mask[idx, :S] * real[:, None]
        (loss, n), grads = loss_and_grad(lora, base, tokens[idx, :S], mask)
        lr = hparams["lr"] * lr_multiplier(icfg, t, total)
        active = (t < total) & (n > 0) & ok
        lora, opt_state, finite = guarded_update(opt, lora, opt_state, grads, lr, loss, active)
        return (lora, opt_state, ok & (finite | ~active)), (jnp.where(active, loss, 0.0), active)

    def skip(carry, t):
        return carry, (jnp.float32(0.0), jnp.bool_(False))

    S = tokens.shape[-1]
    branches = [skip] + [functools.partial(step, S=s) for s in length_buckets(S, icfg.length_buckets)]

    def planned_step(carry, t):
        if plan is None:
            return step(carry, t, S)
        return jax.lax.switch(plan[t] + 1, branches, carry, t)

    init = (lora, opt.init(lora), jnp.bool_(True))
    (lora, _, ok), (losses, active) = jax.lax.scan(planned_step, init, jnp.arange(steps))
    return lora, {"loss": losses, "active": active, "ok": ok}


@functools.partial(jax.jit, static_argnames=("cfg", "icfg", "steps"))
def inner_train_edits(base, edits, keys, hparams, *, cfg: ModelConfig, icfg: InnerConfig, steps: int):
    """vmap of `inner_train_one` over the leading edit axis of edits/keys/hparams; the base is shared.

    One `step_plan` for all edits picks each step's length bucket and skips steps past every edit's count.
    """
    one = functools.partial(inner_train_one, cfg=cfg, icfg=icfg, steps=steps)
    plan = step_plan(edits, keys, hparams, icfg=icfg, steps=steps)
    return jax.vmap(one, in_axes=(None, 0, 0, 0, None))(base, edits, keys, hparams, plan)


def summarize(metrics: dict) -> dict:
    """Host-side per-edit summary: first/last loss, steps taken, ok flag and reason."""
    out = []
    for loss, active, ok in zip(metrics["loss"], metrics["active"], metrics["ok"]):
        steps = np.flatnonzero(active)
        out.append({"steps": int(len(steps)), "ok": bool(ok),
                    "first_loss": float(loss[steps[0]]) if len(steps) else math.nan,
                    "last_loss": float(loss[steps[-1]]) if len(steps) else math.nan,
                    "reason": None if ok else "non-finite loss, gradient or learning rate during the inner update"})
    return out
