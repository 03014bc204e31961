"""SPMD on 8 fake CPU devices: sharded == single device for the inner loop, outer step and sampling;
checkpoints restore onto another mesh."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from seal_jax.runtime import sharding
from seal_jax.engine.chunks import train_in_chunks
from seal_jax.engine.inner import InnerConfig, pack_edits
from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec
from seal_jax.engine.sampling import SamplingConfig, generate

CFG = preset("tiny")
ICFG = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "up", "down")), batch_size=2, loss_chunk=8)
MESHES = [(8, 1, 1), (4, 2, 1), (2, 2, 2)]


def test_eight_fake_devices():
    assert len(jax.devices()) == 8, "tests/conftest.py must set XLA_FLAGS before jax is imported"


@pytest.fixture(scope="module")
def packed():
    rng = np.random.default_rng(0)
    ex = [[(list(rng.integers(3, CFG.vocab_size, n)), [1] * n) for n in rng.integers(4, 16, size=k)]
          for k in (3, 2, 4, 1, 2, 3)]
    return pack_edits(ex, [1e-2, 5e-3, 2e-2, 1e-2, 1e-2, 3e-3], [2, 3, 1, 2, 2, 1], batch_size=2)


def _train(base, packed, mesh=None):
    keys = jax.random.split(jax.random.PRNGKey(1), packed.num_edits)
    parts = list(train_in_chunks(base, CFG, ICFG, packed, keys, 6, mesh=mesh))
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *[l for _, _, l, _ in parts])


@pytest.mark.parametrize("shape", MESHES, ids=str)
def test_inner_loop_sharded_equals_single_device(base, packed, shape):
    mesh = sharding.make_mesh(*shape)
    ref = _train(base, packed)
    got = _train(sharding.shard_params(base, mesh), packed, mesh)
    # Adam normalises each gradient entry, so reduction-order noise in tiny gradients shows up at ~1e-5 in the
    # weights after a few steps (2e-4 on one entry of 3072 with the suite's LLVM -O1 codegen); the update itself
    # is ~lr * steps ≈ 5e-2, so 3e-4 still pins the result.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=3e-4, rtol=1e-3), got, ref)


def test_param_specs_follow_the_rules(base):
    mesh = sharding.make_mesh(2, 2, 2)
    specs = sharding.param_specs(base, mesh)
    assert specs["layers"]["attn"]["q_proj"]["kernel"] == jax.sharding.PartitionSpec(None, "fsdp", "tp")
    assert specs["layers"]["mlp"]["down_proj"]["kernel"] == jax.sharding.PartitionSpec(None, "tp", "fsdp")
    assert specs["layers"]["attn_norm"]["scale"] == jax.sharding.PartitionSpec(None, None)  # replicated
    placed = sharding.shard_params(base, mesh)
    assert placed["layers"]["mlp"]["up_proj"]["kernel"].sharding.spec == specs["layers"]["mlp"]["up_proj"]["kernel"]
    with pytest.raises(ValueError, match="needs that many devices"):
        sharding.make_mesh(3, 2, 1)


def _spy(monkeypatch, module, name, arg):
    """Record the sharding of argument `arg` of every call to module.name."""
    seen, real = [], getattr(module, name)

    def wrapper(*a, **kw):
        out = real(*a, **kw)
        seen.append(getattr(out[arg] if name == "place_batch" else a[arg], "sharding", None))
        return out
    monkeypatch.setattr(module, name, wrapper)
    return seen


ROWS = jax.sharding.PartitionSpec(("edit", "fsdp"))


@pytest.mark.parametrize("shape", MESHES, ids=str)
def test_sampling_and_outer_step_sharded_equal_single_device(base, shape, monkeypatch):
    from seal_jax.engine import outer, sampling
    from seal_jax.engine.outer import OuterConfig, outer_update
    mesh = sharding.make_mesh(*shape)
    sharded = sharding.shard_params(base, mesh)
    prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14], [3, 4]]
    s = SamplingConfig(max_new_tokens=6)
    seen = _spy(monkeypatch, sampling, "_generate", 3)  # the token batch fed to the jitted sampler
    assert (generate(sharded, CFG, None, prompts, s, stop_ids=[-1]).tokens
            == generate(base, CFG, None, prompts, s, stop_ids=[-1]).tokens)
    # 4 prompts on 8 / 4 x 2 / 2 x 2 devices: padded to a multiple of edit x fsdp, rows really sharded
    assert seen[0].spec[0] == ROWS[0] and not seen[0].is_fully_replicated
    seen_outer = _spy(monkeypatch, outer, "place_batch", 0)

    class Tok:  # the outer step only encodes completions
        eos_token_id = 2

        def encode(self, text, add_special_tokens=False):
            return [3 + (ord(ch) % 200) for ch in text]

    examples = [([5, 6, 7], "abc"), ([9, 10], "de"), ([4], "fgh")]
    for mode in ("lora", "full"):
        rl = OuterConfig(LoraSpec(4, 8.0, ("all",)), lr=1e-2, epochs=2, batch_size=2, max_len=64, mode=mode)
        ref, _ = outer_update(base, CFG, Tok(), examples, rl, jax.random.PRNGKey(0))
        got, _ = outer_update(sharded, CFG, Tok(), examples, rl, jax.random.PRNGKey(0))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-3),
                     got, ref)
    full_mode_rows = [x for x in seen_outer if x is not None]  # the full-mode batches of the sharded run
    assert full_mode_rows and all(x.spec[0] == ROWS[0] and not x.is_fully_replicated for x in full_mode_rows)
    # batches follow the weights onto the mesh: rows over ("edit", "fsdp"), replicated without a mesh
    placed = sharding.place_batch(np.zeros((8, 5), np.int32), sharded)
    assert placed.sharding.spec == jax.sharding.PartitionSpec(("edit", "fsdp"), None)
    assert isinstance(sharding.place_batch(np.zeros((8, 5)), base), np.ndarray)


def test_checkpoint_restores_onto_another_mesh(base, tmp_path):
    from seal_jax.runtime.workdir import Workdir
    a, b = sharding.make_mesh(4, 2, 1), sharding.make_mesh(2, 2, 2)
    wd = Workdir(str(tmp_path))
    wd.save(1, {"params": sharding.shard_params(base, a), "key": np.asarray(jax.random.PRNGKey(3))})
    like = {"params": sharding.shard_params(jax.tree.map(jnp.zeros_like, base), b),
            "key": np.asarray(jax.random.PRNGKey(0))}
    step, state = wd.restore(like)
    assert step == 1
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), state["params"], base)
    q = state["params"]["layers"]["attn"]["q_proj"]["kernel"]
    assert isinstance(q.sharding, NamedSharding) and q.sharding.mesh.shape == b.shape
    wd.close()


def _launch_two(args):
    """Start `python args...` as processes 0 and 1 of a jax.distributed job on 127.0.0.1, 2 CPU devices each."""
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs, logs = [], []
    for i in range(2):  # output to files: a full pipe would stall one process and the other waits on it
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=1 "
                             "--xla_cpu_use_fusion_emitters=false",
               "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}
        logs.append((tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")))
        procs.append(subprocess.Popen([sys.executable, *args], cwd=root, env=env, stdout=logs[-1][0],
                                      stderr=logs[-1][1], text=True))
    codes = [p.wait(timeout=900) for p in procs]
    return [(rc, *(f.seek(0) or f.read() for f in pair)) for rc, pair in zip(codes, logs)]


def test_two_processes_share_process_zero_view_and_detect_divergence():
    script = """
import jax
from seal_jax.runtime import sharding
sharding.initialize()
i = jax.process_index()
assert jax.process_count() == 2 and len(jax.devices()) == 4
assert sharding.broadcast_json({"rows": [i, "x"]}) == {"rows": [0, "x"]}
sharding.check_processes_agree({"reward": 0.5, "e_step_s": float(i)}, "timings differ: fine")
try:
    sharding.check_processes_agree({"reward": float(i)}, "iteration 3")
except RuntimeError as e:
    print("caught:", e)
"""
    for rc, out, err in _launch_two(["-c", script]):
        assert rc == 0, err[-3000:]
        assert "the processes disagree on iteration 3 (['reward'])" in out


def test_two_processes_run_one_smoke_iteration(tmp_path):
    """jax.distributed with a local coordinator: 2 processes x 2 CPU devices run one :smoke iteration on a
    (edit=4) mesh; process 0 alone writes one set of records, and it alone talks to the terminal."""
    wd = tmp_path / "run"
    outs = _launch_two(["-m", "seal_jax.cli.train", "--config=configs/knowledge.py:smoke", f"--workdir={wd}",
                        "--config.rl.iterations=1", "--config.mesh.edit=-1", "--config.eval.final_eval=False"])
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    outs = [o[1:] for o in outs]
    assert "iteration 0: reward_mean=" in outs[0][0] and "iteration 0" not in outs[1][0]  # (gloo prints too)
    assert "inner updates" in outs[0][1] and "inner updates" not in outs[1][1]
    records = (wd / "records.jsonl").read_text().splitlines()
    assert len(records) == 3 * 2  # contexts x samples, once
    assert len((wd / "metrics.jsonl").read_text().splitlines()) == 1
    assert (wd / "checkpoints" / "1").is_dir()


def test_two_processes_evaluate(tmp_path):
    """`evaluate` starts as `train` does (cli.common.start_run): 2 processes x 2 CPU devices evaluate two :smoke
    passages on an (edit=4) mesh; process 0 alone prints the table and writes eval.json and the plots.
    (tests/test_evaluate_sharded.py: the sharded result equals the single-device one.)"""
    out = tmp_path / "eval"
    outs = _launch_two(["-m", "seal_jax.cli.evaluate", "--config=configs/knowledge_eval.py:smoke", f"--out={out}",
                        "--config.data.offset=44", "--config.eval.conditions=base,passage", "--config.mesh.edit=-1"])
    for rc, _, err in outs:
        assert rc == 0, err[-3000:]
    assert "Train on passage" in outs[0][1] and "Train on passage" not in outs[1][1]
    assert sorted(os.listdir(out)) == ["conditions.png", "eval.json", "table2.png"]
    result = json.load(open(out / "eval.json"))
    assert result["passages"] == 2 and set(result["accuracy"]) == {"base", "passage"}


@pytest.mark.parametrize("name", ["smollm2_135m", "llama3p2_1b", "qwen2p5_7b"])
def test_every_real_model_leaf_has_its_own_rule(name):
    """Each leaf of a real architecture's NNX state is named by a rule (no catch-all), and a path that no
    rule names, such as one with a stray `.value`, is refused rather than silently replicated."""
    from seal_jax.model.config import preset
    from seal_jax.model.transformer import abstract_params
    shapes = abstract_params(preset(name))  # shapes only: nothing allocated
    paths = ["/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0]]
    # embed, final_norm, 2 layer norms, 7 projections; Qwen2.5: + 3 q/k/v biases + an untied lm_head
    assert len(paths) == (15 if name == "qwen2p5_7b" else 11)
    for path in paths:
        assert sharding.param_rule(path) is not None
    assert any(p.startswith("layers/attn/q_proj/kernel") for p in paths)
    with pytest.raises(ValueError, match="matches no partition rule"):
        sharding.param_rule("layers/attn/q_proj/kernel/value")
