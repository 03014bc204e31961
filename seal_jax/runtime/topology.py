"""TPU and NVIDIA GPU topologies without the hardware: compile-only devices for ahead-of-time planning, the
chips' figures, and a CPU default.

With `libtpu` installed, `jax.experimental.topologies.get_topology_desc("v5e:2x4")` returns the devices of a
TPU slice that is not attached; a `Mesh` over them takes the partition rules and `jax.jit(f).lower(...)
.compile()` gives XLA's own buffer assignment and cost model for that chip (MaxText's `train_compile.py`).

With the CUDA plugin installed (`pip install -e '.[cuda-aot]'`: jax-cuda12-plugin/-pjrt at jax's version, and
nvidia-cuda-nvcc-cu12, whose ptxas and libdevice XLA's GPU compiler needs), `topology_devices("h100:1x1x2")`
does the same for NVIDIA GPUs: `get_topology_desc(platform="cuda", target_config=<GpuTargetConfig text proto>,
topology="1x1x2")` (slices x hosts x GPUs per host) gives compile-only devices of the card the proto describes
(`GPUS`), with JAX_PLATFORMS=cpu and no GPU or driver here (openxla/xla PR 16913, jax-ml/jax aot_test.py
`test_deviceless_aot_compile`). Two differences from TPUs: XLA's GPU compiler does not refuse a program larger
than the card (the plan compares its peak with `Chip.pool_gib`, the memory JAX's GPU allocator takes), and
`cost_analysis()` answers None (engine/aot.py counts flops and bytes itself, `gpu_cost`).

libtpu's presence must not cost ordinary CPU runs anything: with JAX_PLATFORMS unset JAX would probe the TPU
runtime at start-up (metadata queries, "could not determine TPU accelerator type" noise). `default_to_cpu`
pins JAX_PLATFORMS=cpu when this machine has no TPU and no NVIDIA GPU (an installed CUDA plugin without a GPU
counts as none: it would only fail to start its backend); `topology_devices` quiets libtpu's own host discovery
while it builds compile-only devices.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import sys
from typing import Optional

GiB = 1024 ** 3


# JAX's GPU allocator preallocates this fraction of the card's memory and runs every program in it
# (jax.readthedocs.io "GPU memory allocation"); XLA_PYTHON_CLIENT_MEM_FRACTION changes it.
GPU_MEM_FRACTION_DEFAULT = 0.75


@dataclasses.dataclass(frozen=True)
class Chip:
    """Per JAX device (a TensorCore on v4, whose compile-only topology has two devices per chip; one GPU)."""
    name: str
    hbm_gib: float           # HBM per device (spec; XLA reserves a little: it reports 15.75 of v5e's 16)
    bf16_tflops: float       # peak dense bf16 matmul
    hbm_gbps: float          # HBM bandwidth, GB/s
    accelerator_type: str = ""  # TPU_ACCELERATOR_TYPE libtpu expects for this generation ("" for a GPU)
    platform: str = "tpu"    # "tpu" | "cuda"

    def roofline_s(self, flops: float, bytes_accessed: float) -> float:
        """The larger of compute time at peak and memory time at full HBM bandwidth."""
        return max(flops / (self.bf16_tflops * 1e12), bytes_accessed / (self.hbm_gbps * 1e9))

    def pool_gib(self) -> float:
        """Memory one program may hold per device. TPU: HBM (XLA refuses more at compile time). GPU: the pool
        JAX's allocator preallocates, XLA_PYTHON_CLIENT_MEM_FRACTION (default 0.75) of the card's memory; XLA's
        GPU compiler refuses nothing, so the plan compares the compiled peak with this."""
        if self.platform != "cuda":
            return self.hbm_gib
        return self.hbm_gib * gpu_mem_fraction()


def gpu_mem_fraction() -> float:
    raw = os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "")
    try:
        fraction = float(raw) if raw else GPU_MEM_FRACTION_DEFAULT
    except ValueError:
        raise ValueError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={raw!r} is not a number; set it to a fraction such as "
                         "0.9 or unset it (JAX's default: 0.75)") from None
    if not 0 < fraction <= 1:
        raise ValueError(f"XLA_PYTHON_CLIENT_MEM_FRACTION={raw!r} is not in (0, 1]; set it to a fraction such as 0.9")
    return fraction


# Source: Google Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e), per chip:
# v4 32 GiB / 275 TFLOPs / 1228 GB/s (2 TensorCores: halved here, one JAX device per core in the compile-only
# topology); v5e 16 GiB / 197 / 819; v5p 95 GiB / 459 / 2765; v6e (Trillium) 32 GiB / 918 / 1640.
# NVIDIA GPUs, per GPU. Peak dense bf16 Tensor Core throughput and HBM bandwidth from NVIDIA's datasheets: H100
# Tensor Core GPU datasheet, H100 SXM column: BF16 1,979 TFLOPS *with sparsity*, i.e. 989 dense, 80 GB HBM3 at
# 3.35 TB/s; A100 Tensor Core GPU datasheet, A100 80GB SXM column: BF16 312 TFLOPS dense (624 with sparsity),
# 80 GB HBM2e at 2,039 GB/s. Memory per device is what CUDA reports as the card's total (the `GPUS` protos'
# device_memory_size, XLA's xla/tools/hlo_opt/gpu_specs/{h100_sxm,a100_sxm_80}.txtpb): 79.1 and 79.3 GiB.
_H100_BYTES, _A100_BYTES = 84_978_434_048, 85_100_068_864
CHIPS = {
    "TPU v4": Chip("v4 (per core)", 16.0, 137.5, 614.0, "v4-8"),
    "TPU v5 lite": Chip("v5e", 16.0, 197.0, 819.0, "v5litepod-8"),
    "TPU v5": Chip("v5p", 95.0, 459.0, 2765.0, "v5p-8"),
    "TPU v6 lite": Chip("v6e", 32.0, 918.0, 1640.0, "v6e-8"),
    "NVIDIA H100 80GB HBM3": Chip("H100 SXM 80GB", round(_H100_BYTES / GiB, 2), 989.0, 3350.0, platform="cuda"),
    "NVIDIA A100-SXM4-80GB": Chip("A100 SXM 80GB", round(_A100_BYTES / GiB, 2), 312.0, 2039.0, platform="cuda"),
}
_GENERATION = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5litepod": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}


def _gpu_target(description: str, *, cc: tuple[int, int], cores: int, fpus_per_core: int, clock_ghz: float,
                memory_bytes: int, bandwidth: int, l2_bytes: int, smem_per_core: int, smem_optin: int) -> str:
    """A GpuTargetConfig text proto (xla/stream_executor/device_description.proto) for a card that is not here.
    The figures are those of XLA's own gpu_specs files (xla/tools/hlo_opt/gpu_specs/*.txtpb, what
    DeviceDescription reports on the real card); runtime and cuDNN versions are the ones jax-cuda12-plugin 0.10.2
    was built against (CUDA 12.9, cuDNN 9.8: `jax_cuda12_plugin._versions`). XLA uses them to choose fusions,
    tile sizes and libraries; the device kind is `description`."""
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: {smem_per_core} shared_memory_per_block_optin: {smem_optin} threads_per_core_limit: 2048
  core_count: {cores} fpus_per_core: {fpus_per_core} block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: {bandwidth} l2_cache_size: {l2_bytes} clock_rate_ghz: {clock_ghz}
  device_memory_size: {memory_bytes} registers_per_core_limit: 65536 registers_per_block_limit: 65536
  cuda_compute_capability {{ major: {cc[0]} minor: {cc[1]} }}
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 8 }}
runtime_version {{ major: 12 minor: 9 }}
device_description_str: "{description}"
"""


# --topology=<name>:<slices>x<hosts>x<GPUs per host>, e.g. h100:1x1x2 (SEAL's 2 x H100), a100:1x1x8.
GPUS = {
    "h100": _gpu_target("NVIDIA H100 80GB HBM3", cc=(9, 0), cores=132, fpus_per_core=128, clock_ghz=1.98,
                        memory_bytes=_H100_BYTES, bandwidth=3_352_320_000_000, l2_bytes=52_428_800,
                        smem_per_core=233_472, smem_optin=232_448),
    "a100": _gpu_target("NVIDIA A100-SXM4-80GB", cc=(8, 0), cores=108, fpus_per_core=64, clock_ghz=1.41,
                        memory_bytes=_A100_BYTES, bandwidth=2_039_040_000_000, l2_bytes=41_943_040,
                        smem_per_core=167_936, smem_optin=166_912),
}
CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is absent
        return False


def has_cuda_plugin() -> bool:
    return any(_has_module(m) for m in CUDA_PLUGINS)


def has_local_accelerator() -> bool:
    """A TPU attached to this machine, or an NVIDIA GPU (its driver's /dev/nvidia<N>) with JAX's CUDA plugin.
    The plugin alone (installed for compile-only GPU plans) is no accelerator: its backend cannot start."""
    if glob.glob("/dev/accel*") or any(os.path.basename(p).isdigit() for p in glob.glob("/dev/vfio/*")):
        return True
    gpus = any(os.path.basename(p)[len("nvidia"):].isdigit() for p in glob.glob("/dev/nvidia*"))
    return gpus and has_cuda_plugin()


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
        raise ValueError(f"unknown TPU generation or GPU in topology {topology_name!r}; use a TPU generation "
                         f"({', '.join(sorted(_GENERATION))}) or a GPU ({', '.join(sorted(GPUS))}) followed by a "
                         "shape, e.g. v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4, h100:1x1x2, a100:1x1x8")
    return _GENERATION[gen]


def gpu_topology(topology_name: str) -> Optional[tuple[str, str]]:
    """("h100", "1x1x2") for "h100:1x1x2"; None for a TPU topology."""
    card, _, shape = topology_name.partition(":")
    if card.lower() not in GPUS:
        return None
    dims = shape.split("x")
    if len(dims) != 3 or not all(d.isdigit() and int(d) > 0 for d in dims):
        raise ValueError(f"GPU topology {topology_name!r} needs a shape slices x hosts x GPUs per host, e.g. "
                         f"{card}:1x1x2 (two GPUs on one host) or {card}:1x1x8")
    return card.lower(), shape


def gpu_topology_devices(card: str, shape: str) -> list:
    """Compile-only devices of `shape` NVIDIA GPUs of kind `card` (a `GPUS` key). Needs the CUDA plugin."""
    from jax.experimental import topologies
    if not has_cuda_plugin():
        raise RuntimeError(f"AOT compilation for {card}:{shape} needs JAX's CUDA plugin and ptxas: "
                           "pip install -e '.[cuda-aot]' (or its own venv: see docs/planning.md, NVIDIA GPUs)")
    # XLA's GPU compiler runs ptxas and links libdevice: from the nvidia-cuda-nvcc-cu12 wheel, or a CUDA toolkit
    if not _has_module("nvidia.cuda_nvcc") and not os.path.isdir("/usr/local/cuda/nvvm/libdevice"):
        raise RuntimeError(f"AOT compilation for {card}:{shape} needs ptxas and libdevice: pip install "
                           "'nvidia-cuda-nvcc-cu12>=12.9,<13' (part of the [cuda-aot] extra) or a CUDA toolkit")
    # no GPU here: the plugin's check of the CUDA libraries' versions concerns running, not compiling
    os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
    return list(topologies.get_topology_desc(platform="cuda", target_config=GPUS[card], topology=shape).devices)


def topology_devices(topology_name: str) -> list:
    """Compile-only devices of a TPU slice, e.g. "v5e:2x4" -> the 8 devices of a v5e-8 (needs libtpu), or of
    NVIDIA GPUs, e.g. "h100:1x1x2" -> 2 H100s (needs the CUDA plugin)."""
    from jax.experimental import topologies
    gpu = gpu_topology(topology_name)
    if gpu is not None:
        return gpu_topology_devices(*gpu)
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
