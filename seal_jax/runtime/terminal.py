"""What the person at the terminal sees: results (`say`) and progress bars (`progress`), from process 0 only.

On a multi-host run every process runs the same program; one terminal's worth of output comes from process 0,
and the others stay quiet (their warnings still show).
"""
from __future__ import annotations

import jax
from tqdm.auto import tqdm


def is_process_zero() -> bool:
    return jax.process_index() == 0


def say(text: str) -> None:
    """A result line, printed by process 0 only."""
    if is_process_zero():
        print(text, flush=True)


def progress(iterable=None, **kw) -> tqdm:
    """A transient tqdm bar (`leave=False`), shown by process 0 only."""
    return tqdm(iterable, leave=False, disable=not is_process_zero(), **kw)
