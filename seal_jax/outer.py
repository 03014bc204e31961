"""The outer loop's domain-free half (ReST-EM M-step): filter scored self-edits, SFT the generator on them.

`keep_best` filters E-step records; `outer_update` trains a LoRA on (prompt -> kept self-edit) with loss on
the self-edit tokens only and merges it into the generator. The update is `inner.inner_train_edits` with one
"edit" that holds every kept example: one AdamW / schedule / masking implementation serves both loops.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seal_jax.inner import InnerConfig, inner_train_edits, pack_edits, summarize
from seal_jax.model.lora import LoraSpec, merge_lora


def keep_best(records: Sequence[dict], group: str, threshold: float, min_reward: float) -> list[dict]:
    """Best self-edit per `group` value (ties to the earlier sample), kept if ok, reward >= baseline +
    threshold (when the record has a baseline) and reward >= min_reward."""
    best: dict = {}
    for r in sorted(records, key=lambda r: (r[group], r["sample"])):
        if r[group] not in best or r["reward"] > best[r[group]]["reward"]:
            best[r[group]] = r
    return [r for r in best.values() if r["ok"] and r["reward"] >= r.get("baseline", 0.0) + threshold
            and r["reward"] >= min_reward]


def outer_update(params, cfg, tok, examples: Sequence[tuple[list[int], str]], rl, key):
    """SFT the generator on (prompt token ids -> self-edit text), loss on the self-edit + EOS; merged back."""
    ocfg = InnerConfig(lora=LoraSpec(rl.lora_rank, float(rl.lora_alpha), tuple(rl.targets.split(","))),
                       batch_size=rl.batch_size, schedule="linear")
    docs = []
    for prompt_ids, completion in examples:
        c = tok.encode(completion, add_special_tokens=False) + [tok.eos_token_id]
        docs.append((list(prompt_ids) + c, [0] * len(prompt_ids) + [1] * len(c)))
    packed = pack_edits([docs], [rl.lr], [rl.epochs], batch_size=rl.batch_size, max_len=rl.max_len)
    edits, hp = packed.arrays()
    lora, metrics = inner_train_edits(params, edits, jnp.asarray(key)[None], hp, cfg=cfg, icfg=ocfg, steps=packed.steps)
    s = summarize(jax.tree.map(np.asarray, metrics))[0]
    if not s["ok"]:
        raise FloatingPointError("the outer (M-step) update diverged: non-finite loss; lower rl.lr")
    return merge_lora(params, jax.tree.map(lambda x: x[0], lora), ocfg.lora), s
