"""The `seal` console script: `seal <command> [flags]` is `python -m seal_jax.cli.<command> [flags]`.

Each command stays an ordinary module with its own `if __name__ == "__main__":` block; this dispatcher only
picks the module and runs it as `__main__` (runpy), so the two spellings cannot drift apart.
"""
from __future__ import annotations

import runpy
import sys

# command -> (module under seal_jax.cli, one line for `seal --help`)
COMMANDS = {
    "train": ("train", "ReST-EM training of a self-edit generator (--config, --workdir)"),
    "evaluate": ("evaluate", "SEAL's evaluations: knowledge Table 2 / CPT / continual, ARC Table 1 (--config, --out)"),
    "plan": ("plan", "will it fit? per-phase memory and cost for a TPU/GPU topology, compiled without the device"),
    "generate": ("generate", "sample from a model (--model, --prompt)"),
    "absorb": ("absorb", "turn your own documents into a LoRA adapter by self-editing"),
    "ask": ("ask", "ask questions of a model, with or without adapters"),
    "export": ("export", "write a trained generator as a HF checkpoint"),
    "bench": ("bench", "speed against the HF transformers + PEFT peer"),
    "bench-step": ("bench_step", "one packed inner step timed beside its layer matmuls"),
    "bench-load": ("bench_load", "sharded streaming load: time and host memory"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return ("usage: seal <command> [flags]   (seal <command> --help lists a command's flags)\n\ncommands:\n"
            + "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"seal: unknown command {command!r}\n{usage()}")
    module = f"seal_jax.cli.{COMMANDS[command][0]}"
    sys.argv = [f"seal {command}", *rest]
    runpy.run_module(module, run_name="__main__")


if __name__ == "__main__":
    main()
