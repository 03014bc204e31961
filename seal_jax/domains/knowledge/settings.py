"""Everything a knowledge-incorporation run is told, typed. Built from a config only in `seal_jax/cli/settings.py`."""
from __future__ import annotations

import dataclasses

from seal_jax.domains.knowledge.grading import Grading
from seal_jax.domains.knowledge.self_edit import DocOptions
from seal_jax.engine.adapt import AdaptConfig
from seal_jax.engine.sampling import SelfEditSampling


@dataclasses.dataclass(frozen=True)
class KnowledgeSettings:
    source: str                   # passages: "demo", a .json/.jsonl path, or a hub name
    held_out: int                 # without eval_source: the last `held_out` passages are for the final evaluation
    eval_source: str              # SEAL's split: evaluation passages from here (its validation set), RL from source
    eval_start: int               # ... SEAL's subset of it: shuffled with shuffle_seed, [eval_start, eval_start+eval_n)
    eval_n: int
    shuffle_seed: int             # SEAL's random.seed(42) shuffle, of the RL and the evaluation passages
    limit: int                    # use the first `limit` passages (0: all)
    rounds: tuple[tuple[int, int], ...]  # RL passages: each round's [start, end) of the shuffled source, in order
                                  # (with eval_source; rl.draw=disjoint takes them a round at a time); (): all
    prompt: str                   # the self-edit prompt (self_edit.PROMPTS)
    chat: bool                    # prompts through the chat template (SEAL's instruct path), else raw text
    documents: DocOptions         # self-edit -> training documents
    round_split_lines: tuple[bool, ...]  # SEAL's split_newlines per RL round's reward (round i > len: the last);
                                  # (): documents.split_lines in every round
    self_edits: SelfEditSampling  # how the generator writes self-edits
    adapt: AdaptConfig            # the inner update (LoRA, optimiser, chunks) and how adapted models answer
    lr: float                     # inner-update learning rate
    epochs: int                   # inner-update epochs
    repeats: int                  # independent trainings per item in evaluation; the score is their mean accuracy
    reward_repeats: int           # the same in the E-step: SEAL's reward is the mean over 3 inner runs
    keep: str                     # top1: SEAL's ReST-EM, the best self-edit of every passage, always; threshold:
                                  # the best if it beats the baseline by `threshold` and reaches `min_reward`
    grading: Grading
    threshold: float              # keep a self-edit if its reward >= its passage's baseline + threshold ...
    min_reward: float             # ... and >= min_reward
    eval_self_edits: int          # self-edits sampled per held-out passage in evaluation


def parse_rounds(text: str, contexts: int) -> tuple[tuple[int, int], ...]:
    """data.rounds "0:50,100:150" -> ((0, 50), (100, 150)); each range must hold `contexts` (rl.contexts) passages."""
    rounds = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        lo, sep, hi = part.partition(":")
        if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
            raise ValueError(f"data.rounds {text!r}: {part!r} is not a range start:end (e.g. 0:50,100:150)")
        lo, hi = int(lo), int(hi)
        if hi - lo != contexts:
            raise ValueError(f"data.rounds {text!r}: {part} holds {hi - lo} passages, but every round takes "
                             f"rl.contexts={contexts}")
        rounds.append((lo, hi))
    return tuple(rounds)


def parse_flags(text: str, name: str) -> tuple[bool, ...]:
    """"true,false" -> (True, False), for `name` in errors."""
    values = {"true": True, "false": False}
    flags = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [f for f in flags if f not in values]
    if bad:
        raise ValueError(f"{name} {text!r}: {bad[0]!r} is neither true nor false (e.g. true,false)")
    return tuple(values[f] for f in flags)
