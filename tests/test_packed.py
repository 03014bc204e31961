"""Packed inner steps against the vmapped inner loop (itself checked against a sequential optax loop).

The vmapped reference runs every step at full length (`length_buckets=1`): one compiled step instead of
four, and bucketed steps are checked against the sequential loop in tests/test_inner.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seal_jax.engine.inner import InnerConfig, inner_train_edits, pack_edits, pad_edits
from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec
from seal_jax.model.transformer import sequence_logprobs, forward, token_logprobs
from seal_jax.engine.packed import plan_steps, train_packed
from seal_jax.runtime import sharding

CFG = preset("tiny")


def _docs(rng, n_docs, lo=4, hi=40, output_only=False):
    out = []
    for _ in range(n_docs):
        n = int(rng.integers(lo, hi))
        mask = [1] * n
        if output_only:  # a prompt whose tokens are context only
            k = int(rng.integers(1, n - 1))
            mask = [0] * k + [1] * (n - k)
        out.append((list(rng.integers(3, CFG.vocab_size, n)), mask))
    return out


def _compare(base, examples, lrs, epochs, icfg, tol=2e-5, pad_to=None, mesh=None, cfg=CFG):
    packed = pack_edits(examples, lrs, epochs, batch_size=icfg.batch_size)
    if pad_to:
        packed = pad_edits(packed, pad_to)
    keys = jax.random.split(jax.random.PRNGKey(3), packed.num_edits)
    e, h = packed.arrays()
    ref, ref_m = inner_train_edits(base, e, keys, h, cfg=CFG, icfg=icfg, steps=packed.steps)
    got, got_m = train_packed(base if mesh is None else sharding.shard_params(base, mesh), cfg, icfg, packed, keys,
                              mesh)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol), got, ref)
    steps = got_m["loss"].shape[1]
    np.testing.assert_array_equal(np.asarray(got_m["active"]), np.asarray(ref_m["active"])[:, :steps])
    assert not np.asarray(ref_m["active"])[:, steps:].any()
    np.testing.assert_allclose(np.asarray(got_m["loss"]), np.asarray(ref_m["loss"])[:, :steps], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got_m["ok"]), np.asarray(ref_m["ok"]))
    return got_m


@pytest.mark.parametrize("batch_size,step_edits", [(1, 0), (2, 0), (1, 2)])
def test_packed_equals_vmapped_mixed_edits(base, batch_size, step_edits):
    """step_edits=2: each step carries 2 of the row's 6 adapters (gathered in, scattered back)."""
    rng = np.random.default_rng(0)
    examples = [_docs(rng, 3), _docs(rng, 5, 4, 12), _docs(rng, 2, 30, 60), _docs(rng, 4, output_only=True)]
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "down")), batch_size=batch_size,
                       loss_chunk=8, length_buckets=1, step_edits=step_edits)
    _compare(base, examples, [1e-2, 3e-3, 2e-2, 5e-3], [2, 3, 1, 2], icfg, pad_to=6)  # 2 dummy edits


@pytest.mark.parametrize("attention_impl,axes,step_edits", [("xla", (2, 2, 1), 0), ("splash", (2, 2, 1), 0),
                                                            ("splash", (2, 1, 2), 0), ("xla", (2, 2, 1), 1)])
def test_packed_rows_on_a_mesh_equal_vmapped(base, attention_impl, axes, step_edits):
    """On an edit x fsdp x tp mesh of 4 of the 8 host devices: one packed row per (edit, fsdp) device, each holding
    the documents of the edits that device owns, the edit stack and rows sharded alike, the base fsdp- and
    tp-sharded; the splash kernel (Pallas interpret mode here) runs per device's rows (and, with tp, its own
    heads) under shard_map, as Mosaic kernels must. step_edits=1: each row gathers 1 of its 2 edits' adapters."""
    rng = np.random.default_rng(7)
    examples = [_docs(rng, 3), _docs(rng, 2, 4, 12), _docs(rng, 2, 30, 60), _docs(rng, 3, output_only=True),
                _docs(rng, 1), _docs(rng, 4, 4, 10)]
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "down")), batch_size=1, loss_chunk=8,
                       length_buckets=1, lora_impl="ragged", step_edits=step_edits)
    mesh = sharding.make_mesh(*axes, jax.devices()[:4])
    rows = axes[0] * axes[1]
    plan = plan_steps(pad_edits(pack_edits(examples, [1e-2] * 6, [2] * 6), 8), jax.random.split(jax.random.PRNGKey(3), 8),
                      icfg, rows)
    assert plan[0]["tokens"].shape[0] == rows and plan[0]["token_adapter"].max() <= (step_edits or 8 // rows) - 1
    _compare(base, examples, [1e-2, 3e-3, 2e-2, 5e-3, 1e-2, 4e-3], [2, 3, 1, 2, 2, 1], icfg, pad_to=8, mesh=mesh,
             cfg=CFG.replace(attention_impl=attention_impl))


def test_packed_non_finite_edit_is_flagged_alone(base):
    rng = np.random.default_rng(1)
    examples = [_docs(rng, 3), _docs(rng, 3), _docs(rng, 2)]
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v")), batch_size=1, loss_chunk=8,
                       max_grad_norm=0.0, length_buckets=1)
    m = _compare(base, examples, [1e-2, np.inf, 2e-2], [2, 2, 2], icfg)
    assert list(np.asarray(m["ok"])) == [True, False, True]


@pytest.mark.parametrize("attention_impl", ["xla", "splash"])
def test_no_attention_across_packed_documents(base, attention_impl):
    """Perturbing one document's tokens moves no other document's log-probs in the packed row; with XLA's masked
    attention and with the splash kernel (Pallas interpret mode here; tests/test_kernels.py has cuDNN's arguments)."""
    rng = np.random.default_rng(2)
    examples = [_docs(rng, 2, 10, 20), _docs(rng, 2, 10, 20)]
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v")), batch_size=2)
    packed = pack_edits(examples, [1e-2, 1e-2], [1, 1], batch_size=2)
    plan = plan_steps(packed, jax.random.split(jax.random.PRNGKey(0), 2), icfg)[0]
    cfg = CFG.replace(attention_impl=attention_impl)

    @jax.jit
    def logprobs_of(tokens):
        hidden, _ = forward(base, cfg, tokens, plan["positions"], jnp.ones_like(tokens, bool),
                            segment_ids=plan["segment_ids"])
        return token_logprobs(base, hidden[:, :-1], tokens[:, 1:])[0]

    logprobs = lambda tokens: np.asarray(logprobs_of(tokens))

    seg = plan["segment_ids"][0]
    first = np.flatnonzero(seg == 0)
    moved = plan["tokens"].copy()
    moved[0, first[1:]] = (moved[0, first[1:]] + 7) % CFG.vocab_size
    a, b = logprobs(plan["tokens"]), logprobs(moved)
    others = np.flatnonzero((seg[1:] > 0) & (seg[1:] < seg.max()) & (seg[1:] == seg[:-1]))
    np.testing.assert_allclose(a[others], b[others], atol=1e-6)
    assert np.abs(a[first[1:-1]] - b[first[1:-1]]).max() > 1e-3  # the perturbed document did change
    # and each packed document's log-probs equal that document run alone
    for s in range(int(seg.max())):
        idx = np.flatnonzero(seg == s)
        alone = np.asarray(sequence_logprobs(base, CFG, plan["tokens"][:, idx], np.ones((1, len(idx)))))[0]
        np.testing.assert_allclose(a[idx[:-1]], alone, atol=1e-5)


def test_banded_attention_equals_full_attention_on_a_packed_row(base):
    """Each query block scoring only the window before it gives the full block-diagonal result, as long as no
    document is longer than the window; and the packed plan picks banded rows when they are shorter."""
    rng = np.random.default_rng(6)
    examples = [_docs(rng, 3, 5, 25) for _ in range(4)]
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v")), batch_size=3)
    packed = pack_edits(examples, [1e-2] * 4, [1] * 4, batch_size=3)
    plan = plan_steps(packed, jax.random.split(jax.random.PRNGKey(0), 4), icfg)[0]
    tokens, seg = plan["tokens"], plan["segment_ids"]
    T = -(-tokens.shape[1] // 8) * 8
    pad = lambda x, v: np.pad(x, ((0, 0), (0, T - x.shape[1])), constant_values=v)
    tokens, seg, positions = pad(tokens, 0), pad(seg, seg.max()), pad(plan["positions"], 0)
    run = lambda window: np.asarray(forward(base, CFG, tokens, positions, np.ones_like(tokens, bool),
                                            segment_ids=seg, window=window)[0])
    np.testing.assert_allclose(run((8, 24)), run(None), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="window"):
        forward(base, CFG, tokens[:, :T - 3], positions[:, :T - 3], np.ones((1, T - 3), bool),
                segment_ids=seg[:, :T - 3], window=(8, 24))


@pytest.mark.parametrize("rows,step_edits", [(1, 0), (2, 0), (1, 2), (2, 1)])
def test_packed_schedule_runs_each_edits_steps_in_order_in_full_rows(rows, step_edits):
    """The token-budget schedule: one row length and window for the chunk; every edit's steps run once each, in
    its own order (the documents `edit_schedules` gives step t), at most one step per packed step; no row
    overflows; and the chunk takes exactly as many packed steps as its longest training (the fewest possible).
    With step_edits, a row trains at most that many edits per step, its slots name them, and the chunk takes
    as many packed steps as its rows' steps need at that many a step."""
    from seal_jax.engine.inner import _lengths
    from seal_jax.engine.packed import edit_schedules
    rng = np.random.default_rng(0)
    examples = [_docs(rng, 3), _docs(rng, 5, 4, 12), _docs(rng, 2, 30, 60), _docs(rng, 4, output_only=True)]
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v")), batch_size=2, step_edits=step_edits)
    packed = pack_edits(examples, [1e-2] * 4, [2, 3, 1, 2], batch_size=2)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    plans = plan_steps(packed, keys, icfg, rows)
    schedules, lengths = edit_schedules(packed, keys, 2), _lengths(packed.loss_mask)
    per_row = 4 // rows
    K = step_edits or per_row
    assert len({(p["tokens"].shape, p["window"]) for p in plans}) == 1
    row_steps = [sum(len(schedules[e]) for e in range(g * per_row, (g + 1) * per_row)) for g in range(rows)]
    assert len(plans) == max(max(len(s) for s in schedules), *(-(-n // K) for n in row_steps))
    seen = {e: [] for e in range(4)}
    for p in plans:
        # each token's edit: token_edit counts in the step's carried stack (row g's slot k: g K + k)
        carried = (p["slots"] + per_row * np.arange(rows)[:, None]).reshape(-1) if "slots" in p else np.arange(4)
        assert ("slots" in p) == (K < per_row)
        edit_of = np.append(carried, -1)[p["token_edit"]]  # the tail: -1
        for g in range(rows):
            assert p["active"][g * per_row:(g + 1) * per_row].sum() <= K
        for e in np.flatnonzero(p["active"]):
            seen[e].append(p["edit_step"][e])
            row = e // per_row
            got = p["tokens"][row][edit_of[row] == e]
            want = np.concatenate([packed.tokens[e, d, :lengths[e, d]] for d in schedules[e][p["edit_step"][e]]])
            np.testing.assert_array_equal(got, want)
        assert (edit_of >= 0).sum() == p["real_tokens"] <= p["tokens"].size
    assert all(seen[e] == list(range(len(schedules[e]))) for e in range(4))


def test_chunks_give_the_same_adapters_in_either_step_form(base):
    """`train_in_chunks` with step_form=packed equals the vmapped form chunk by chunk (last chunk padded with
    dummy edits), and packed computes fewer token slots than vmapped for a short/long document mix."""
    import dataclasses
    from seal_jax.engine.chunks import token_slots, train_in_chunks
    rng = np.random.default_rng(4)
    examples = [_docs(rng, 4, 4, 12) + _docs(rng, 1, 50, 60) for _ in range(5)]
    vm = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v")), batch_size=1, loss_chunk=8,
                     length_buckets=1)
    pk = dataclasses.replace(vm, step_form="packed")
    packed = pack_edits(examples, [1e-2] * 5, [2] * 5, batch_size=1)
    keys = jax.random.split(jax.random.PRNGKey(5), 5)
    a = list(train_in_chunks(base, CFG, vm, packed, keys, edits_per_chunk=3))
    b = list(train_in_chunks(base, CFG, pk, packed, keys, edits_per_chunk=3))
    assert [(s, e) for s, e, *_ in a] == [(s, e) for s, e, *_ in b] == [(0, 3), (3, 5)]
    for (_, _, la, ma), (_, _, lb, mb) in zip(a, b):
        # per-step losses to 1e-5; weights to 5e-5: Adam divides each gradient entry by its own magnitude, so the
        # float32 reduction-order noise of two matmul layouts grows over 10 steps on near-zero gradients
        np.testing.assert_allclose(ma["loss"][:, :mb["loss"].shape[1]], mb["loss"], atol=1e-5, rtol=1e-5)
        jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=5e-5, rtol=5e-5), la, lb)
    real = packed.train_tokens()
    assert real < token_slots(packed, keys, pk, 3) < token_slots(packed, keys, vm, 3)
    with pytest.raises(ValueError, match="step_form"):
        InnerConfig(step_form="ragged")


def test_a_call_with_fewer_edits_than_a_chunk_trains_no_dummy_edits(base, monkeypatch):
    """Chunks are padded with dummy edits only past the call's own edits: 2 edits at 3 per chunk train as 2."""
    from seal_jax.engine import chunks
    widths, real = [], chunks.train_packed
    monkeypatch.setattr(chunks, "train_packed", lambda b, c, i, p, *a: widths.append(p.num_edits) or real(b, c, i, p, *a))
    rng = np.random.default_rng(8)
    packed = pack_edits([_docs(rng, 2), _docs(rng, 3)], [1e-2, 1e-2], [1, 1], batch_size=1)
    icfg = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v")), loss_chunk=8, step_form="packed")
    out = list(chunks.train_in_chunks(base, CFG, icfg, packed, jax.random.split(jax.random.PRNGKey(0), 2), 3))
    assert widths == [2] and [(s, e) for s, e, *_ in out] == [(0, 2)]
    assert chunks.token_slots(packed, jax.random.split(jax.random.PRNGKey(0), 2), icfg, 3) == \
        chunks.token_slots(packed, jax.random.split(jax.random.PRNGKey(0), 2), icfg, 2)


def test_a_chunk_compiles_its_packed_step_once(base):
    """The first step's state is placed like every later step's outputs, so one chunk (one row length) runs one
    compiled step: before, the first step's uncommitted state compiled a second program (~7 s each for SmolLM2)."""
    from seal_jax.engine import packed as packed_module
    rng = np.random.default_rng(7)
    packed = pack_edits([_docs(rng, 3), _docs(rng, 2)], [1e-2, 1e-2], [2, 2], batch_size=1)
    icfg = InnerConfig(lora=LoraSpec(rank=3, alpha=6.0, targets=("q", "v")), loss_chunk=8)  # a shape of its own
    before = packed_module.packed_step._cache_size()
    base = jax.device_put(base, jax.devices()[0])  # committed, as a loaded checkpoint is
    train_packed(base, CFG, icfg, packed, jax.random.split(jax.random.PRNGKey(0), 2))
    assert packed_module.packed_step._cache_size() == before + 1


def test_both_grouped_lora_forms_equal_a_per_token_loop():
    """The CPU form (masked dense) and the TPU/GPU form (lax.ragged_dot) of the per-token LoRA delta, values and
    gradients, against one matmul per token."""
    from seal_jax.model.transformer import grouped_masked, grouped_ragged
    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 6)).astype(np.float32)
    a, b = rng.normal(size=(3, 6, 2)).astype(np.float32), rng.normal(size=(3, 2, 5)).astype(np.float32)
    ids = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2])
    ref = np.stack([x[t] @ a[ids[t]] @ b[ids[t]] for t in range(len(ids))])
    loss = lambda f: lambda a, b: (f(x, a, b, ids) ** 2).sum()
    for f in (grouped_masked, grouped_ragged):
        np.testing.assert_allclose(np.asarray(f(x, a, b, ids)), ref, rtol=1e-5, atol=1e-5)
    ga, gr = jax.grad(loss(grouped_masked), (0, 1))(a, b), jax.grad(loss(grouped_ragged), (0, 1))(a, b)
    jax.tree.map(lambda p, q: np.testing.assert_allclose(np.asarray(p), np.asarray(q), rtol=1e-4, atol=1e-4), ga, gr)
