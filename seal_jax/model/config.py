"""Model architecture as one frozen, hashable dataclass.

`ModelConfig` is static under `jax.jit` (it is hashable), so shapes and branches derived from it are
compile-time constants. It covers the Llama family (Llama-3.x, SmolLM2) and Qwen2/Qwen2.5: the only
differences are q/k/v biases, tied embeddings and Llama-3 RoPE scaling. Build one from a HF
`config.json` dict (`from_hf_config`), from GGUF metadata (`from_gguf_fields`), or take a preset.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

REMAT_POLICIES = ("none", "full", "dots")
# Attention over packed rows (`transformer.attend_packed`): auto = splash on TPU, cudnn on GPU (bf16/f16), else xla.
ATTENTION_IMPLS = ("auto", "xla", "splash", "cudnn")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style RoPE frequency scaling (HF `rope_type: llama3`)."""
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: Optional[RopeScaling] = None
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    qkv_bias: bool = False           # Qwen2: biases on q/k/v projections
    max_position_embeddings: int = 4096
    model_type: str = "llama"        # "llama" or "qwen2": the HF family used on export
    remat: str = "full"              # per-layer rematerialisation: none | full | dots
    unroll_loops: bool = False       # unroll the layer scan and the query/loss chunk loops: XLA's cost model
                                     # counts a loop body once (planning only)
    query_chunk: int = 0             # > 0: attention scores for this many queries at a time (long prefills, long
                                     # documents: [B, H, chunk, T] live instead of [B, H, S, T]); 0: all at once
    attention_impl: str = "auto"     # packed rows (segment ids): one of ATTENTION_IMPLS

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat={self.remat!r}; choose one of {REMAT_POLICIES}")
        if self.query_chunk < 0:
            raise ValueError(f"query_chunk={self.query_chunk} must be >= 0 (0: all queries at once)")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl={self.attention_impl!r}; choose one of {ATTENTION_IMPLS}")
        if self.model_type not in ("llama", "qwen2"):
            raise ValueError(f"model_type={self.model_type!r}; supported: llama, qwen2")

    def replace(self, **kw) -> "ModelConfig":
        return dataclasses.replace(self, **kw)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def num_params(self) -> int:
        d, f, L = self.hidden_size, self.intermediate_size, self.num_layers
        attn = d * self.q_dim * 2 + d * self.kv_dim * 2 + (self.q_dim + 2 * self.kv_dim if self.qkv_bias else 0)
        layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_embeddings else d * self.vocab_size
        return self.vocab_size * d + L * layer + d + head

    def flops_per_token(self, seq_len: int) -> float:
        """Forward matmul FLOPs per token (2 x params touched + attention scores), the MFU convention."""
        d, L = self.hidden_size, self.num_layers
        dense = self.num_params() - self.vocab_size * d * (0 if self.tie_embeddings else 1)
        attn = 2 * 2 * L * seq_len * self.q_dim / 2  # causal: QK^T and AV over half the keys on average
        return 2.0 * dense + attn

    # ---- HF interop -------------------------------------------------------------------------------
    def to_hf_config(self) -> dict:
        """A `config.json` dict that transformers loads as LlamaForCausalLM / Qwen2ForCausalLM."""
        arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[self.model_type]
        out = dict(
            architectures=[arch], model_type=self.model_type, vocab_size=self.vocab_size,
            hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim, hidden_act="silu",
            rms_norm_eps=self.rms_norm_eps, rope_theta=self.rope_theta,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_embeddings, torch_dtype="float32",
        )
        if self.model_type == "llama":
            out.update(attention_bias=self.qkv_bias, mlp_bias=False)
        if self.rope_scaling is not None:
            out["rope_scaling"] = dict(rope_type="llama3", **dataclasses.asdict(self.rope_scaling))
        return out


def from_hf_config(hf: Mapping[str, Any], **overrides) -> ModelConfig:
    """ModelConfig from a HF `config.json` dict (Llama / Qwen2 families; transformers 4.x or 5.x keys)."""
    model_type = hf.get("model_type", "")
    if model_type not in ("llama", "qwen2"):
        raise ValueError(f"unsupported architecture model_type={model_type!r} (supported: llama, qwen2)")
    for flag in ("attention_bias", "mlp_bias"):  # Llama variants with biases on q/k/v/o or the MLP: not modelled
        if model_type == "llama" and hf.get(flag):
            raise ValueError(f"unsupported Llama variant: {flag}=true (this decoder has no o_proj / MLP biases)")
    rope = dict(hf.get("rope_parameters") or {})
    rope.update(hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    scaling = None
    if rope_type == "llama3":
        scaling = RopeScaling(float(rope["factor"]), float(rope["low_freq_factor"]),
                              float(rope["high_freq_factor"]), int(rope["original_max_position_embeddings"]))
    elif rope_type not in ("default", None):
        raise ValueError(f"unsupported rope scaling type {rope_type!r} (supported: default, llama3)")
    heads = hf["num_attention_heads"]
    cfg = ModelConfig(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"], num_heads=heads,
        num_kv_heads=hf.get("num_key_value_heads") or heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
        rope_theta=float(hf.get("rope_theta", rope.get("rope_theta", 10000.0))), rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=(model_type == "qwen2"),
        max_position_embeddings=int(hf.get("max_position_embeddings", 4096)), model_type=model_type,
    )
    return cfg.replace(**overrides)


def from_gguf_fields(fields: Mapping[str, Any], has_output_tensor: bool) -> ModelConfig:
    """ModelConfig from GGUF metadata (`{arch}.block_count` etc.), llama and qwen2 architectures."""
    arch = fields.get("general.architecture")
    if arch not in ("llama", "qwen2"):
        raise ValueError(f"unsupported GGUF architecture {arch!r} (supported: llama, qwen2)")
    g = lambda k, default=None: fields.get(f"{arch}.{k}", default)
    d, heads = int(g("embedding_length")), int(g("attention.head_count"))
    vocab = g("vocab_size") or len(fields["tokenizer.ggml.tokens"])
    return ModelConfig(
        vocab_size=int(vocab), hidden_size=d, intermediate_size=int(g("feed_forward_length")),
        num_layers=int(g("block_count")), num_heads=heads, num_kv_heads=int(g("attention.head_count_kv", heads)),
        head_dim=int(g("rope.dimension_count", d // heads)), rope_theta=float(g("rope.freq_base", 10000.0)),
        rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)), tie_embeddings=not has_output_tensor,
        qkv_bias=(arch == "qwen2"), max_position_embeddings=int(g("context_length", 4096)), model_type=arch,
    )


PRESETS = {
    # Tiny random model for tests and :smoke presets.
    "tiny": ModelConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4,
                        num_kv_heads=2, head_dim=16, rope_theta=10000.0, tie_embeddings=True),
    "smollm2_135m": ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                                num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
                                rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=8192),
    "llama3p2_1b": ModelConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_layers=16,
                               num_heads=32, num_kv_heads=8, head_dim=64, rope_theta=500000.0,
                               rope_scaling=RopeScaling(32.0, 1.0, 4.0, 8192), rms_norm_eps=1e-5,
                               tie_embeddings=True, max_position_embeddings=131072),
    "qwen2p5_7b": ModelConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                              num_heads=28, num_kv_heads=4, head_dim=128, rope_theta=1000000.0,
                              rms_norm_eps=1e-6, tie_embeddings=False, qkv_bias=True,
                              max_position_embeddings=32768, model_type="qwen2"),
}


def preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
