"""SEAL (Self-Adapting Language Models) in JAX. Layers, each using only the ones before it:

    model/, weights/, tokenizer.py   the transformer and LoRA as pytrees; checkpoints in and out; tokens
    runtime/                         devices and processes, the run directory, the terminal, plots, costs
    engine/                          inner update, sampling, answering, adapt -> answer, outer update
    domains/                         task families behind one interface (base.Domain): knowledge, arc
    rl/                              the ReST-EM driver over any domain
    cli/                             entry points (python -m seal_jax.cli.<name>); nothing imports them
"""
