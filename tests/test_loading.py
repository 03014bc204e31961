"""Streaming weight loading on 8 fake CPU devices: a sharded HF checkpoint (index.json + several files) goes
straight to its NamedShardings; each device holds only its shard, the logits equal the single-device load's;
bf16 stays bf16 on the host; and a hub id that cannot be fetched says why and how to pass a directory."""
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seal_jax.model.transformer import forward, logits_from_hidden
from seal_jax.runtime import sharding
from seal_jax.weights import hf, load_hf_checkpoint, resolve_model_path


def _tiny_hf(kind: str, dtype=torch.float32):
    """A tiny random HF model whose widths divide by 8 (so fsdp=8 really splits every sharded dim)."""
    import transformers
    torch.manual_seed(0)
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if kind == "llama":  # untied head
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, tie_word_embeddings=False))
    else:  # q/k/v biases, tied head
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, tie_word_embeddings=True))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype).eval()


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def sharded_dir(request, tmp_path_factory):
    """A HF checkpoint split into several safetensors files with model.safetensors.index.json."""
    path = tmp_path_factory.mktemp(request.param)
    _tiny_hf(request.param).save_pretrained(str(path), safe_serialization=True, max_shard_size="40KB")
    assert os.path.exists(path / "model.safetensors.index.json") and len(list(path.glob("*.safetensors"))) > 2
    return str(path)


def _logits(params, cfg):
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 128, size=(8, 24)))
    B, S = ids.shape
    hidden, _ = forward(params, cfg, ids, jnp.broadcast_to(jnp.arange(S), (B, S)), jnp.ones((B, S), bool))
    return np.asarray(logits_from_hidden(params, hidden))


def test_fsdp8_load_holds_an_eighth_per_device_and_matches_the_unsharded_logits(sharded_dir):
    mesh = sharding.make_mesh(1, 8, 1)
    cfg, ref = load_hf_checkpoint(sharded_dir)  # one device
    _, got = load_hf_checkpoint(sharded_dir, shardings=sharding.param_shardings(mesh))
    assert all(x.sharding.device_set == {jax.local_devices()[0]} for x in jax.tree.leaves(ref))
    specs = sharding.param_specs(ref, mesh)
    for path, x in jax.tree_util.tree_flatten_with_path(got)[0]:
        spec = specs
        for k in path:
            spec = spec[k.key]
        assert x.sharding.spec == spec
        shards = x.addressable_shards
        assert sorted(s.device.id for s in shards) == list(range(8))
        split = "fsdp" in spec  # every rule with fsdp splits this model's dims 8 ways; the rest is replicated
        for s in shards:
            assert s.data.size == (x.size // 8 if split else x.size)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(_at(ref, path)))
    embed = got["embed"]["embedding"]
    assert embed.addressable_shards[3].data.shape == (128, 8)  # [V, D/8]: device 3 holds columns 24:32
    np.testing.assert_array_equal(np.asarray(embed.addressable_shards[3].data),
                                  np.asarray(ref["embed"]["embedding"])[:, 24:32])
    np.testing.assert_allclose(_logits(got, cfg), _logits(ref, cfg), rtol=1e-5, atol=1e-5)


def _at(tree, path):
    for k in path:
        tree = tree[k.key]
    return tree


def test_each_distinct_shard_is_read_once(sharded_dir, monkeypatch):
    """Devices that replicate a shard share one read: on an edit=2 x fsdp=2 x tp=2 mesh, each block of each
    HF tensor is read once per distinct shard, never once per device."""
    reads = []
    real = hf.SafetensorsDir.read

    def counted(self, name, index):
        reads.append(name)
        return real(self, name, index)
    monkeypatch.setattr(hf.SafetensorsDir, "read", counted)
    mesh = sharding.make_mesh(2, 2, 2)
    cfg, params = load_hf_checkpoint(sharded_dir, shardings=sharding.param_shardings(mesh))
    q = params["layers"]["attn"]["q_proj"]["kernel"]  # [L, D, out] on (None, fsdp, tp): 4 distinct shards
    assert len(q.addressable_shards) == 8 and reads.count("model.layers.0.self_attn.q_proj.weight") == 4
    assert reads.count("model.norm.weight") == 1  # replicated everywhere: read once


def test_bf16_checkpoint_loads_as_bf16_and_f32(tmp_path):
    model = _tiny_hf("qwen2", torch.bfloat16)
    model.save_pretrained(str(tmp_path), safe_serialization=True, max_shard_size="40KB")
    mesh = sharding.make_mesh(1, 8, 1)
    cfg, bf16 = load_hf_checkpoint(str(tmp_path), dtype=jnp.bfloat16, shardings=sharding.param_shardings(mesh))
    _, f32 = load_hf_checkpoint(str(tmp_path))
    want = model.model.layers[1].mlp.down_proj.weight.detach().float().numpy().T  # HF [out, in] -> ours [in, out]
    got = bf16["layers"]["mlp"]["down_proj"]["kernel"]
    assert got.dtype == jnp.bfloat16 and f32["embed"]["embedding"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got[1], np.float32), want)  # bit-exact: bf16 all the way
    np.testing.assert_array_equal(np.asarray(f32["layers"]["mlp"]["down_proj"]["kernel"][1]), want)


def _hub_error(kind):
    from types import SimpleNamespace

    from huggingface_hub import errors
    response = SimpleNamespace(headers={}, status_code=403 if kind == "forbidden" else 401, request=None,
                               url="https://huggingface.co", json=lambda: {}, text="")
    if kind == "offline":
        return errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
    if kind == "unreachable":
        return ConnectionError("Failed to resolve 'huggingface.co'")
    cls = {"gated": errors.GatedRepoError, "missing": errors.RepositoryNotFoundError,
           "forbidden": errors.HfHubHTTPError}[kind]
    return cls(f"{kind} (test)", response=response)


@pytest.mark.parametrize("kind,why", [
    ("gated", r"is a gated repository: accept its license at https://huggingface.co/meta-llama/Llama-3.2-1B"),
    ("missing", r"does not exist on the HF hub, or is private"),
    ("forbidden", r"refused access \(HTTP 403\)"),
    ("offline", r"the HF hub is unreachable or offline mode is on"),
    ("unreachable", r"the HF hub is unreachable or offline mode is on"),
])
def test_hub_failures_say_why_and_how_to_pass_a_directory(kind, why, monkeypatch):
    import huggingface_hub

    def refuse(*a, **kw):
        raise _hub_error(kind)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(FileNotFoundError, match=why) as e:
        resolve_model_path("meta-llama/Llama-3.2-1B")
    assert "'meta-llama/Llama-3.2-1B'" in str(e.value) and "--config.model.name=/path/to/dir" in str(e.value)


def test_offline_hub_id_fails_with_the_hint():
    """No network here and HF_HUB_OFFLINE=1 (tests/conftest.py): the real huggingface_hub call fails cleanly."""
    with pytest.raises(FileNotFoundError, match=r"offline mode is on .*--config.model.name=/path/to/dir"):
        resolve_model_path("seal-jax-tests/no-such-model")


def _load_config(config_file: str, preset: str):
    import importlib.util
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(config_file[:-3], os.path.join(root, "configs", config_file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


def test_paper_preset_takes_a_local_directory_or_explains_the_hub(sharded_dir, tmp_path_factory):
    """configs/arc.py:paper with --config.model.name=<a local directory> and fsdp=8 builds the model straight
    onto the mesh; left at its hub id with no network, it fails with the hint instead."""
    from seal_jax.cli.common import build_model
    from seal_jax.tokenizer import load_tokenizer
    c = _load_config("arc.py", "paper")
    with pytest.raises(FileNotFoundError, match=re.escape(c.model.name) + ".*--config.model.name=/path/to/dir"):
        build_model(c.model, c.seed)
    local = tmp_path_factory.mktemp("local")
    for f in os.listdir(sharded_dir):
        os.link(os.path.join(sharded_dir, f), local / f)
    load_tokenizer(resolve_model_path("smollm2-135m")).save_pretrained(str(local))  # any tokenizer will do
    c.model.name, c.mesh.fsdp = str(local), 8
    mesh = sharding.make_mesh(c.mesh.edit, c.mesh.fsdp, c.mesh.tp)
    cfg, params, tok = build_model(c.model, c.seed, mesh)
    _, ref = load_hf_checkpoint(sharded_dir)
    q = params["layers"]["attn"]["q_proj"]["kernel"]
    assert q.sharding.mesh.shape == mesh.shape and q.addressable_shards[0].data.shape == (2, 8, 64)
    assert cfg.remat == c.model.remat and tok is not None
    np.testing.assert_array_equal(np.asarray(q), np.asarray(ref["layers"]["attn"]["q_proj"]["kernel"]))


def test_gguf_tokenizer_is_saved_once_and_encodes_as_transformers_gguf_loader(tmp_path, monkeypatch):
    """The tokenizer rebuilt from SmolLM2's GGUF is kept as a HF directory; loading that gives the same ids,
    special tokens and chat prompt as transformers' GGUF loader (which needs torch; ours does not), and a second
    load does not rebuild it."""
    from transformers import AutoTokenizer
    from seal_jax import tokenizer
    monkeypatch.setattr(tokenizer, "GGUF_CACHE", str(tmp_path))
    path = resolve_model_path("smollm2-135m")
    reference = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    ours = tokenizer.load_tokenizer(path)
    (cached,) = tmp_path.iterdir()
    stamp = cached.stat().st_mtime_ns
    again = tokenizer.load_tokenizer(path)
    assert cached.stat().st_mtime_ns == stamp and [p.name for p in tmp_path.iterdir()] == [cached.name]
    for text in ["Hello world!", "Apollo 11\n landed in 1969. Äö 你好 <|im_end|><|im_start|>user",
                 "  two spaces\n\n\ttab 1234567 3.14 don't we've 🎉", "<|endoftext|>" + "a" * 40, ""]:
        assert ours.encode(text) == again.encode(text) == reference.encode(text)
        assert ours.decode(ours.encode(text)) == reference.decode(reference.encode(text))
    assert ours.get_vocab() == reference.get_vocab()
    assert ours.all_special_tokens == reference.all_special_tokens
    assert tokenizer.chat_prompt(ours, "hi", system="Be brief.") == tokenizer.chat_prompt(reference, "hi", system="Be brief.")
    assert (ours.eos_token_id, ours.pad_token, len(ours)) == (reference.eos_token_id, "<|im_end|>", len(reference))
