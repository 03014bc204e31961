"""SPMD with JAX's own tools: one Mesh with axes ("edit", "fsdp", "tp") and the partition rules, in one place.

    base weights         fsdp over the model dim, tp over heads / FFN width; replicated across "edit"
    per-edit state       LoRA, Adam moments, edit batches, keys, hparams: leading E axis on "edit"
    sampling / answering batch rows over ("edit", "fsdp") (`place_batch`, following the weights' mesh)
    outer SFT            full mode: batch rows over ("edit", "fsdp"); lora mode: one edit, rows replicated

The vmapped inner loop has no cross-edit communication: each edit group holds a full (fsdp x tp-sharded)
copy of the base and its own edits. Code stays single-program: inputs are placed with `NamedSharding` and
`jax.jit` propagates the layout; nothing here schedules work by hand. Multi-host: call `initialize()` first,
then every process runs the same program.
"""
from __future__ import annotations

import os
import re
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("edit", "fsdp", "tp")

# (regex on the "/"-joined parameter path, spec for the leaf's dims). First match wins; L is the layer axis.
# Every leaf must match a rule: a path no rule names (a renamed module, a stray `.value`) is an error, never
# silently replicated.
PARAM_RULES = (
    (r"^embed/embedding$", P("tp", "fsdp")),                                  # [V, D]
    (r"^lm_head/kernel$", P("fsdp", "tp")),                                   # [D, V]
    (r"^layers/(attn/(q|k|v)|mlp/(gate|up))_proj/kernel$", P(None, "fsdp", "tp")),  # [L, D, out]
    (r"^layers/(attn/o|mlp/down)_proj/kernel$", P(None, "tp", "fsdp")),     # [L, in, D]
    (r"^layers/attn/(q|k|v)_proj/bias$", P(None, "tp")),                     # [L, out]
    (r"^layers/(attn|mlp)_norm/scale$", P()),                                # [L, D]: replicated
    (r"^final_norm/scale$", P()),                                            # [D]: replicated
)


def initialize() -> None:
    """jax.distributed.initialize() when launched as several processes (TPU pods set this up themselves;
    elsewhere pass JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID)."""
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], int(os.environ["JAX_NUM_PROCESSES"]),
                                   int(os.environ["JAX_PROCESS_ID"]))
    elif (os.environ.get("SEAL_JAX_DISTRIBUTED") == "1" or os.environ.get("TPU_WORKER_HOSTNAMES")
          or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")):
        jax.distributed.initialize()  # auto-detected cluster (TPU VM metadata, SLURM); launch/tpu_run.sh sets it


def make_mesh(edit: int = -1, fsdp: int = 1, tp: int = 1, devices=None) -> Mesh:
    """A ("edit", "fsdp", "tp") mesh; edit=-1 takes every device not used by fsdp x tp."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if min(fsdp, tp) < 1 or edit == 0 or edit < -1:
        raise ValueError(f"mesh edit={edit} x fsdp={fsdp} x tp={tp}: fsdp and tp must be >= 1, edit >= 1 or -1 "
                         "(every device fsdp x tp leaves)")
    if edit == -1:
        if n % (fsdp * tp):
            raise ValueError(f"{n} devices do not divide into fsdp={fsdp} x tp={tp}; choose mesh.fsdp x mesh.tp "
                             f"dividing {n} (--config.mesh.fsdp=1, or --config.mesh.edit=0 for one device, no mesh)")
        edit = n // (fsdp * tp)
    if edit * fsdp * tp != n:
        raise ValueError(f"mesh edit={edit} x fsdp={fsdp} x tp={tp} = {edit * fsdp * tp} needs that many devices; "
                         f"{n} are available (--config.mesh.edit=-1 takes every device fsdp x tp leaves)")
    return Mesh(np.asarray(devices).reshape(edit, fsdp, tp), AXES)


def _fit(spec: P, shape: tuple, mesh: Mesh) -> P:
    """Drop mesh axes from dims they do not divide (tiny models, odd vocabularies)."""
    out = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = int(np.prod([mesh.shape[a] for a in names])) if names else 1
        out.append(axes if names and dim % size == 0 else None)
    return P(*out)


def _path(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def param_rule(name: str) -> P:
    """The PartitionSpec of the base parameter at `name` ("layers/attn/q_proj/kernel")."""
    for pattern, spec in PARAM_RULES:
        if re.match(pattern, name):
            return spec
    raise ValueError(f"parameter {name!r} matches no partition rule in sharding.PARAM_RULES; add a rule for it")


def param_specs(params, mesh: Mesh, lead: tuple = ()):
    """PartitionSpecs for a base-parameter pytree (with `lead` axes prepended, e.g. ("edit",) for stacks)."""
    def spec(path, x):
        name = _path(path)
        return _fit(P(*lead, *param_rule(name)), x.shape, mesh)
    return jax.tree_util.tree_map_with_path(spec, params)


def param_shardings(mesh: Mesh):
    """params (or their abstract shapes) -> the NamedSharding of every leaf: how `weights.load_model` streams a
    checkpoint onto the mesh and `shard_params` moves a pytree there."""
    def shardings(params):
        return jax.tree.map(lambda _, s: NamedSharding(mesh, s), params, param_specs(params, mesh))
    return shardings


def shard_params(params, mesh: Mesh):
    return jax.tree.map(jax.device_put, params, param_shardings(mesh)(params))


def edit_sharded(tree, mesh: Mesh):
    """Place every leaf's leading (edit) axis on "edit"; the rest replicated."""
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, _fit(P("edit"), np.shape(x), mesh))), tree)


def batch_sharded(tree, mesh: Mesh, axis_of: Callable = lambda x: 0):
    """Place each leaf's batch axis (`axis_of(leaf)`: the leading one) over ("edit", "fsdp"): sampling and
    outer-SFT batches, packed edit stacks."""
    spec = lambda x: P(*([None] * axis_of(x)), ("edit", "fsdp"))
    return jax.tree.map(lambda x: jax.device_put(x, NamedSharding(mesh, _fit(spec(x), np.shape(x), mesh))), tree)


def batch_multiple(params) -> int:
    """Rows a batch must be a multiple of to shard over ("edit", "fsdp") where `params` live; 1 off a mesh."""
    mesh = _params_mesh(params)
    return 1 if mesh is None else mesh.shape["edit"] * mesh.shape["fsdp"]


def _params_mesh(params) -> Optional[Mesh]:
    sharding = getattr(jax.tree.leaves(params)[0], "sharding", None)
    if not isinstance(sharding, NamedSharding) or "edit" not in sharding.mesh.axis_names:
        return None
    return sharding.mesh


def on_mesh(params) -> bool:
    """Whether `params` live on an ("edit", "fsdp", "tp") mesh."""
    return _params_mesh(params) is not None


def place_batch(tree, params):
    """Put batch inputs' leading axis on ("edit", "fsdp") when `params` live on a mesh; else leave them.

    Sampling, answering and full fine-tuning call this, so callers only choose where the weights go."""
    mesh = _params_mesh(params)
    return tree if mesh is None else batch_sharded(tree, mesh)


def to_host(x) -> np.ndarray:
    """A numpy copy of a (possibly multi-host) array; every process gets the whole value."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def broadcast_json(obj):
    """Process 0's value of a JSON-able object on every process (identity on one process)."""
    if jax.process_count() == 1:
        return obj
    import json
    from jax.experimental import multihost_utils
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if jax.process_index() == 0 else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.int32(data.size)))
    buf = multihost_utils.broadcast_one_to_all(np.pad(data, (0, n - data.size)))
    return json.loads(np.asarray(buf).tobytes().decode())


def check_processes_agree(metrics: dict, what: str) -> None:
    """Fail loudly if the processes' Python-side results differ (a diverged SPMD program hangs or corrupts
    silently). Timings (keys ending in "_s") are excluded."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils
    keys = sorted(k for k, v in metrics.items() if not k.endswith("_s") and isinstance(v, (int, float)))
    values = np.nan_to_num(np.asarray([metrics[k] for k in keys], np.float32), nan=-1.0)
    try:
        multihost_utils.assert_equal(values, "")
    except AssertionError:
        raise RuntimeError(f"process {jax.process_index()}: the processes disagree on {what} ({keys}); every "
                           "process must see the same data, config and code version") from None


def edit_multiple(mesh: Optional[Mesh]) -> int:
    """Chunks of edits must be a multiple of this (the "edit" axis size)."""
    return 1 if mesh is None else mesh.shape["edit"]
