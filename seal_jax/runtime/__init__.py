"""How a run runs: devices and processes, its directory on disk, what the terminal shows, what it costs.

    sharding.py     Mesh ("edit", "fsdp", "tp"), partition rules, batch placement, multi-host helpers
    workdir.py      records.jsonl, metrics.jsonl, TensorBoard, orbax checkpoints, atomic directory writes
    terminal.py     results and progress bars from process 0 only
    plots.py        PNG plots of evaluation results and RL curves
    memory_plan.py  per-device memory estimate for a model, LoRA and mesh
    profiling.py    where a traced run's wall-clock time goes, by jitted function and kind of XLA op
"""
