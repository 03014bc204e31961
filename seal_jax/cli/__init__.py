"""Entry points, one module each (`python -m seal_jax.cli.<name>`); library code never imports this package.

    train.py      ReST-EM training of a generator (configs/*.py)
    evaluate.py   SEAL's evaluation conditions for a model or a run's generator (configs/*_eval.py)
    absorb.py     your documents -> self-edits -> a PEFT LoRA adapter
    ask.py        answers from a model with adapters, stacked or compared
    generate.py   text from a model (and an adapter)
    export.py     a run's generator -> a HF checkpoint directory
    plan.py       per-device memory plan for a config and mesh
    bench.py      benchmarks against HF transformers peers (bench_peer.py: HF + PEFT, one edit at a time)
    common.py     the absl runner, the config flag, the model a config names
    settings.py   config -> typed settings: the only place a ConfigDict is read
"""
