"""A run's working directory: append-only E-step records, metrics, TensorBoard, orbax checkpoints.
Also `write_atomically`, for output directories (adapters, exported models) that must appear whole or not at all.

    DIR/records.jsonl    one line per scored self-edit, written (and fsynced) as soon as it exists
    DIR/metrics.jsonl    one line per iteration (and per evaluation)
    DIR/samples/N.json   iteration N's sampled self-edits (reused on resume)
    DIR/tb/              TensorBoard scalars
    DIR/checkpoints/N/   generator params + RNG after iteration N's M-step (orbax)

Resuming = restore the newest checkpoint, then skip every record already on disk. A line cut short by a
kill is dropped on open, so the file stays valid JSONL. Only process 0 writes.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable, Iterable, Optional

import jax
import numpy as np

from seal_jax.runtime.sharding import broadcast_json


def is_writer() -> bool:
    return jax.process_index() == 0


def check_path(path: str) -> str:
    """The absolute path of a workdir to be; a ValueError for one that cannot be (an object-store URL)."""
    if "://" in path:
        raise ValueError(f"workdir {path!r}: records are appended and fsynced line by line, which object stores "
                         "(gs://, s3://) cannot do. Mount the bucket on every host (e.g. `gcsfuse --implicit-dirs "
                         "BUCKET /mnt/seal`) or use NFS, and pass the mounted path")
    return os.path.abspath(path)


class Workdir:
    def __init__(self, path: str):
        self.path = check_path(path)
        os.makedirs(self.path, exist_ok=True)
        self.records_path = os.path.join(self.path, "records.jsonl")
        self.metrics_path = os.path.join(self.path, "metrics.jsonl")
        self._repair(self.records_path)
        self._repair(self.metrics_path)
        self._tb = None
        self._ckpt = None

    @staticmethod
    def _repair(path: str) -> None:
        """Drop a trailing partial line left by a kill mid-write."""
        if not os.path.exists(path) or not is_writer():
            return
        with open(path, "rb") as f:
            data = f.read()
        if data and not data.endswith(b"\n"):
            with open(path, "wb") as f:
                f.write(data[: data.rfind(b"\n") + 1])

    # ---- JSONL ----
    def _append(self, path: str, rows: Iterable[dict]) -> None:
        if not is_writer():
            return
        with open(path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def append_records(self, rows: Iterable[dict]) -> None:
        self._append(self.records_path, rows)

    def records(self, **match) -> list[dict]:
        """Records matching `match`, as process 0 sees them (a collective: every process calls it in turn)."""
        rows = []
        if is_writer() and os.path.exists(self.records_path):
            with open(self.records_path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        return [r for r in broadcast_json(rows) if all(r.get(k) == v for k, v in match.items())]

    def logged_steps(self) -> set:
        if not os.path.exists(self.metrics_path):
            return set()
        with open(self.metrics_path) as f:
            return {json.loads(line)["step"] for line in f if line.strip()}

    def log_metrics(self, step: int, metrics: dict) -> None:
        """One metrics.jsonl row (and TensorBoard scalars) per step; a step already logged before a restart
        is not logged twice."""
        if not is_writer() or step in self.logged_steps():
            return
        self._append(self.metrics_path, [{"step": step, **metrics}])
        if self._tb is None:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(self.path, "tb"))
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and np.isfinite(v):
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    def cached_json(self, name: str, compute):
        """The JSON value stored under `name` (process 0's view), or compute(), store it and return it.

        E-steps keep the iteration's sampled self-edits here, so a resumed run neither samples them again nor
        depends on sampling being bit-for-bit repeatable."""
        path = os.path.join(self.path, name)
        stored = None
        if is_writer() and os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
        stored = broadcast_json({"value": stored})["value"]
        if stored is not None:
            return stored
        value = compute()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.write_json(name, value)
        return value

    def write_json(self, name: str, obj) -> str:
        path = os.path.join(self.path, name)
        if is_writer():
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(obj, f, indent=2)
            os.replace(tmp, path)  # never a half-written file under the final name
        return path

    # ---- checkpoints ----
    @property
    def checkpoints(self):
        if self._ckpt is None:
            import orbax.checkpoint as ocp
            self._ckpt = ocp.CheckpointManager(os.path.join(self.path, "checkpoints"),
                                               options=ocp.CheckpointManagerOptions(max_to_keep=2))
        return self._ckpt

    def save(self, step: int, state: dict) -> None:
        import orbax.checkpoint as ocp
        self.checkpoints.save(step, args=ocp.args.StandardSave(state))
        self.checkpoints.wait_until_finished()

    def restore(self, like: dict) -> tuple[Optional[int], Optional[dict]]:
        """(step, state) of the newest checkpoint, or (None, None) for a fresh run."""
        import orbax.checkpoint as ocp
        step = self.checkpoints.latest_step()
        if step is None:
            return None, None
        return step, self.checkpoints.restore(step, args=ocp.args.StandardRestore(like))

    def close(self):
        if self._tb is not None:
            self._tb.close()
        if self._ckpt is not None:
            self._ckpt.close()


def restore_generator(workdir: str, params) -> tuple[int, dict]:
    """(RL iterations done, generator params) from a run's newest checkpoint; `params` gives the structure (and
    the shardings it is restored onto)."""
    if not os.path.isdir(check_path(workdir)):
        raise FileNotFoundError(f"{workdir}: no such run directory (a seal_jax.cli.train --workdir)")
    wd = Workdir(workdir)
    step, state = wd.restore({"params": params, "key": np.asarray(jax.random.PRNGKey(0))})
    wd.close()
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint to take the generator from")
    return step, state["params"]


def write_atomically(out: str, overwrite: bool, fill: Callable[[str], object]) -> None:
    """Call fill(tmp_dir), then move tmp_dir to `out` (replacing it only with overwrite)."""
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".partial-", dir=parent)
    try:
        fill(tmp)
        if os.path.exists(out):
            old = tmp + ".old"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
