"""The blocks every experiment config shares: the run and mesh, the model per preset, and the defaults of the
inner update, the outer (M-step) update and evaluation that both domains use.

Config files are loaded by path (`--config=configs/knowledge.py:demo`), not imported, so the others load
this one with `sibling`. Presets: smoke (a tiny random model with SmolLM2's tokenizer), demo (SmolLM2-135M on
one device), paper (the paper's model with per-layer remat, on every device along the mesh's edit axis).
"""
import importlib.util
import os

import ml_collections

PRESETS = ("smoke", "demo", "paper")


def sibling(name: str):
    """configs/<name>.py as a module."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"seal_jax_configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def preset_of(arg: str) -> str:
    preset = arg or "demo"
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose smoke, demo or paper")
    return preset


def base(domain: str, preset: str, paper_model: str) -> ml_collections.ConfigDict:
    """domain, seed, mesh and model for `preset`."""
    c = ml_collections.ConfigDict()
    c.domain = domain
    c.seed = 0
    # SPMD mesh ("edit", "fsdp", "tp"); edit=0: one device, no mesh; edit=-1: all devices not used by fsdp x tp.
    c.mesh = dict(edit=-1 if preset == "paper" else 0, fsdp=1, tp=1)
    # name: a registered name (smollm2-135m), a HF directory (config.json, *.safetensors, tokenizer files) or
    # .gguf path, a hub repo id (fetched once into the HF cache; gated repos need a login), or random:<preset>.
    c.model = dict(name="smollm2-135m", tokenizer="smollm2-135m", remat="none",
                   dtype="auto",  # base weights: auto = bf16 on accelerators, f32 on CPU
                   query_chunk=0,  # > 0: attention over this many queries at a time (long sequences); 0: all
                   attention_impl="auto")  # packed rows: xla, splash (TPU), cudnn (GPU); auto: splash/cudnn/xla by chip
    if preset == "smoke":
        c.model.name = "random:tiny"
    elif preset == "paper":
        c.model.update(name=paper_model, tokenizer=paper_model, remat="full", query_chunk=512)
    return c


def inner(**fields) -> dict:
    """The inner update: LoRA (lora_rank, lora_alpha, targets), optimiser, batch_size, max_len, chunking."""
    return dict(dict(edits_per_chunk=4,
                     answer_rows=0,  # rows per answering call, 0: a chunk's every question at once (long prompts: bound it)
                     length_buckets=4,  # vmapped steps run at S/4..S tokens, whichever holds their documents
                     step_form="vmapped",  # or "packed": each step's real documents end to end (engine/packed.py)
                     lora_impl="auto",  # packed steps' per-token LoRA: dense (masked matmuls; auto), ragged (ragged_dot)
                     step_edits=0,  # packed: most edits a row trains per step, the adapters it carries (0: all)
                     remat="",  # the inner updates' per-layer remat (none, full, dots); "": model.remat
                     loss_chunk=128),  # positions per log-softmax chunk of the inner loss (0: all at once)
                **fields)


def rl(**fields) -> dict:
    """ReST-EM: iterations, contexts x samples per E-step, the keep rule, and the M-step (mode lora: SEAL's
    LoRA SFT, merged; full: every weight, optax AdamW)."""
    return dict(dict(mode="lora", iterations=2, threshold=0.0, targets="all",
                     step_form="vmapped"),  # mode lora: or "packed", each step's examples end to end (off a mesh)
                **fields)


def evaluation(c: ml_collections.ConfigDict, **eval_fields) -> ml_collections.ConfigDict:
    """An evaluation config (configs/*_eval.py) from a training one."""
    c.generator_workdir = ""  # a seal_jax.cli.train workdir whose newest checkpoint writes the self-edits
    c.eval.update(eval_fields)
    return c
