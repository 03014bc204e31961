"""TPU topologies without TPUs: compile-only devices for ahead-of-time planning, the chips' figures, and a CPU default.

With `libtpu` installed, `jax.experimental.topologies.get_topology_desc("v5e:2x4")` returns the devices of a
TPU slice that is not attached; a `Mesh` over them takes the partition rules and `jax.jit(f).lower(...)
.compile()` gives XLA's own buffer assignment and cost model for that chip (MaxText's `train_compile.py`).

libtpu's presence must not cost ordinary CPU runs anything: with JAX_PLATFORMS unset JAX would probe the TPU
runtime at start-up (metadata queries, "could not determine TPU accelerator type" noise). `default_to_cpu`
pins JAX_PLATFORMS=cpu when this machine has no TPU and no CUDA plugin; `topology_devices` quiets libtpu's
own host discovery while it builds compile-only devices.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import sys

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per JAX device (a TensorCore on v4, whose compile-only topology has two devices per chip)."""
    name: str
    hbm_gib: float           # HBM per device (spec; XLA reserves a little: it reports 15.75 of v5e's 16)
    bf16_tflops: float       # peak dense bf16 matmul
    hbm_gbps: float          # HBM bandwidth, GB/s
    accelerator_type: str    # TPU_ACCELERATOR_TYPE libtpu expects for this generation

    def roofline_s(self, flops: float, bytes_accessed: float) -> float:
        """The larger of compute time at peak and memory time at full HBM bandwidth."""
        return max(flops / (self.bf16_tflops * 1e12), bytes_accessed / (self.hbm_gbps * 1e9))


# Source: Google Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e), per chip:
# v4 32 GiB / 275 TFLOPs / 1228 GB/s (2 TensorCores: halved here, one JAX device per core in the compile-only
# topology); v5e 16 GiB / 197 / 819; v5p 95 GiB / 459 / 2765; v6e (Trillium) 32 GiB / 918 / 1640.
CHIPS = {
    "TPU v4": Chip("v4 (per core)", 16.0, 137.5, 614.0, "v4-8"),
    "TPU v5 lite": Chip("v5e", 16.0, 197.0, 819.0, "v5litepod-8"),
    "TPU v5": Chip("v5p", 95.0, 459.0, 2765.0, "v5p-8"),
    "TPU v6 lite": Chip("v6e", 32.0, 918.0, 1640.0, "v6e-8"),
}
_GENERATION = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5litepod": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}


def has_local_accelerator() -> bool:
    """A TPU attached to this machine, or a CUDA plugin for JAX installed."""
    if glob.glob("/dev/accel*") or any(os.path.basename(p).isdigit() for p in glob.glob("/dev/vfio/*")):
        return True
    return any(importlib.util.find_spec(m) is not None for m in ("jax_cuda12_plugin", "jax_cuda13_plugin"))


def default_to_cpu() -> None:
    """JAX_PLATFORMS=cpu when it is unset and this machine has no accelerator (call before JAX starts backends).

    Without it an installed libtpu makes every CPU run probe for TPUs first, slowly and noisily."""
    if "JAX_PLATFORMS" not in os.environ and not has_local_accelerator():
        os.environ["JAX_PLATFORMS"] = "cpu"
        if "jax" in sys.modules:  # JAX read the variable at import; its config still applies until a backend starts
            sys.modules["jax"].config.update("jax_platforms", "cpu")


def generation(topology_name: str) -> str:
    """The device kind of "v5e:2x4" ("TPU v5 lite")."""
    gen = topology_name.split(":")[0].split("-")[0]
    if gen not in _GENERATION:
        raise ValueError(f"unknown TPU generation in topology {topology_name!r}; use one of "
                         f"{sorted(_GENERATION)} followed by a shape, e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4")
    return _GENERATION[gen]


def topology_devices(topology_name: str) -> list:
    """Compile-only devices of a TPU slice, e.g. "v5e:2x4" -> the 8 devices of a v5e-8. Needs libtpu."""
    from jax.experimental import topologies
    if importlib.util.find_spec("libtpu") is None:
        raise RuntimeError("AOT compilation for a TPU topology needs libtpu: pip install 'libtpu==0.0.42.*' "
                           "(`make test` installs it)")
    quiet = {"TPU_SKIP_MDS_QUERY": "1", "TPU_WORKER_HOSTNAMES": "localhost", "TPU_WORKER_ID": "0",
             "TPU_ACCELERATOR_TYPE": CHIPS[generation(topology_name)].accelerator_type}
    saved = {k: os.environ.get(k) for k in quiet}
    if not has_local_accelerator():  # on a real TPU VM the runtime's own settings stay
        os.environ.update(quiet)
    try:
        return list(topologies.get_topology_desc(platform="tpu", topology_name=topology_name).devices)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def chip_of(devices) -> Chip:
    kind = devices[0].device_kind
    if kind not in CHIPS:
        raise ValueError(f"no figures for device kind {kind!r}; add it to runtime/topology.CHIPS with its source")
    return CHIPS[kind]
