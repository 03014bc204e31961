"""Few-shot ARC (SEAL section 3.2): learn to configure one's own test-time training on a puzzle.

    tasks.py       ArcTask: loading, grids as text, invertible augmentations, views and voting
    self_edit.py   the self-edit JSON (augmentations, loss, lr, epochs): parsing, limits, budget, TTT data
    settings.py    ArcSettings: everything a run is told, typed
    updates.py     one update: TTT data -> LoRA -> predictions under views -> vote -> solved
    evaluation.py  ICL, TTT with the default / oracle self-edit, sampled self-edits
    domain.py      ArcDomain: the ReST-EM plug-in
"""
