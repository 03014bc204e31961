"""The vmapped inner loop against a sequential optax reference, padding invariance, one compile, real SmolLM2."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from seal_jax.engine.inner import (InnerConfig, batch_loss, epoch_order, inner_train_edits, pack_edits, pad_edits,
                            summarize, tokenize_document)
from seal_jax.engine.chunks import train_in_chunks
from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec, init_lora

CFG = preset("tiny")
ICFG = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "down")), batch_size=2, loss_chunk=8)


def _examples(rng, n_docs, max_len=16):
    out = []
    for _ in range(n_docs):
        n = int(rng.integers(4, max_len))
        out.append((list(rng.integers(3, CFG.vocab_size, n)), [1] * n))
    return out


@pytest.fixture(scope="module")
def edits():
    rng = np.random.default_rng(0)
    return [_examples(rng, n) for n in (3, 5, 2)]


def _run(base, packed, keys, icfg=ICFG):
    e, h = packed.arrays()
    return inner_train_edits(base, e, keys, h, cfg=CFG, icfg=icfg, steps=packed.steps)


@functools.partial(jax.jit, static_argnames="icfg")
def _grad(lora, base, tokens, mask, *, icfg):  # one compile per shape for every reference run
    return jax.grad(lambda l: batch_loss(l, base, tokens, mask, cfg=CFG, icfg=icfg)[0])(lora)


def _reference(base, examples, key, lr, epochs, icfg=ICFG):
    """A plain sequential loop: optax.adamw with HF's linear schedule, one Python step at a time."""
    packed = pack_edits([examples], [lr], [epochs], batch_size=icfg.batch_size)
    tokens, mask, valid = packed.tokens[0], packed.loss_mask[0], packed.seq_valid[0]
    k_init, k_shuffle = jax.random.split(key)
    lora = init_lora(k_init, CFG, icfg.lora)
    per_epoch = math.ceil(len(examples) / icfg.batch_size)
    total = per_epoch * epochs
    opt = optax.chain(optax.clip_by_global_norm(icfg.max_grad_norm),
                      optax.adamw(optax.linear_schedule(lr, 0.0, total), icfg.adam_b1, icfg.adam_b2, icfg.adam_eps,
                                  weight_decay=icfg.weight_decay))
    state = opt.init(lora)
    grad = lambda l, t, m: _grad(l, base, t, m, icfg=icfg)
    for epoch in range(epochs):
        order = [int(i) for i in epoch_order(k_shuffle, jnp.asarray(valid), epoch)][:len(examples)]
        for b in range(per_epoch):
            idx = order[b * icfg.batch_size:(b + 1) * icfg.batch_size]
            g = grad(lora, tokens[idx], mask[idx])
            updates, state = opt.update(g, state, lora)
            lora = optax.apply_updates(lora, updates)
    return lora


def _close(a, b, tol=5e-5):
    # float32 reduction order differs between a vmapped and a single-edit step; Adam divides each gradient entry
    # by its own magnitude, so after ~10 steps that noise reaches ~1e-5 on weights the update moves by ~1e-1
    # (2.5e-5 on one entry of 512 with the suite's LLVM -O1 codegen, tests/conftest.py). A missed step or a
    # wrong learning rate moves them by ~1e-3.
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol), a, b)


def test_vmapped_edits_equal_sequential_reference(base, edits):
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    lrs, epochs = [1e-2, 3e-3, 2e-2], [2, 3, 4]   # heterogeneous settings, one compiled call
    lora, metrics = _run(base, pack_edits(edits, lrs, epochs, batch_size=2), keys)
    assert metrics["ok"].all()
    for i in range(3):
        ref = _reference(base, edits[i], keys[i], lrs[i], epochs[i])
        _close(jax.tree.map(lambda x: x[i], lora), ref)
        assert int(metrics["active"][i].sum()) == epochs[i] * math.ceil(len(edits[i]) / 2)
    assert np.abs(np.asarray(lora["q_proj"]["b"])).max() > 1e-4  # it did train


def test_length_bucketed_steps_equal_the_sequential_reference(base):
    """Short and long documents mixed: steps run at 16..64 tokens (`step_plan`) and still equal a plain loop
    that trains every document at its full padded length."""
    from seal_jax.engine.inner import length_buckets, step_plan
    rng = np.random.default_rng(7)
    mixed = [[(list(rng.integers(3, CFG.vocab_size, n)), [1] * n) for n in lengths]
             for lengths in ([5, 60, 9], [12, 7, 30, 6])]
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    packed = pack_edits(mixed, [1e-2, 2e-2], [3, 2], batch_size=1)
    e, h = packed.arrays()
    plan = np.asarray(step_plan(e, keys, h, icfg=ICFG_1, steps=packed.steps))
    assert length_buckets(64, 4) == (16, 32, 48, 64) and packed.tokens.shape[-1] == 64
    assert len(set(plan[plan >= 0].tolist())) >= 2 and (plan == -1).sum() == packed.steps - 9  # 3 x 3 steps
    lora, metrics = inner_train_edits(base, e, keys, h, cfg=CFG, icfg=ICFG_1, steps=packed.steps)
    for i, (lr, ep) in enumerate([(1e-2, 3), (2e-2, 2)]):
        _close(jax.tree.map(lambda x: x[i], lora), _reference(base, mixed[i], keys[i], lr, ep, ICFG_1))


ICFG_1 = InnerConfig(lora=LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "down")), batch_size=1, loss_chunk=8)


def test_padding_changes_no_result(base, edits):
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    lrs, epochs = [1e-2] * 3, [2, 2, 3]
    tight = pack_edits(edits, lrs, epochs, batch_size=2)
    loose = pad_edits(pack_edits(edits, lrs, epochs, batch_size=2, len_multiple=64, min_docs=16,
                                 steps_multiple=32), 5)
    assert loose.tokens.shape[1:] == (16, 64) and loose.steps == 32 and loose.num_edits == 5
    a, _ = _run(base, tight, keys)
    b, mb = _run(base, loose, jnp.concatenate([keys, keys[:2]]))
    # Only float reassociation differs (longer reductions over masked slots), which Adam's normalisation
    # can lift to ~1e-5 absolute on 1e-2 entries after a few steps.
    _close(a, jax.tree.map(lambda x: x[:3], b), 1e-4)
    assert not mb["active"][3:].any()  # dummy edits take no step


def test_heterogeneous_batch_equals_separate_runs(base, edits):
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    lrs, epochs = [5e-3, 2e-2, 1e-2], [1, 4, 2]
    together, _ = _run(base, pack_edits(edits, lrs, epochs, batch_size=2), keys)
    for i in range(3):
        alone, _ = _run(base, pack_edits([edits[i]], [lrs[i]], [epochs[i]], batch_size=2), keys[i:i + 1])
        _close(jax.tree.map(lambda x: x[i], together), jax.tree.map(lambda x: x[0], alone))


def test_shapes_bucket_so_later_batches_reuse_the_compiled_update():
    """Documents per edit pad to a power of two >= 8 and the scan to a power of two of steps, so rounds whose
    self-edits have different line counts and epochs share one compiled update (steps beyond need are skipped)."""
    rng = np.random.default_rng(6)
    one, seven = (pack_edits([_examples(rng, n)], [1e-2], [ep], batch_size=1) for n, ep in ((1, 3), (7, 1)))
    assert one.tokens.shape == seven.tokens.shape == (1, 8, 16) and one.steps == seven.steps == 8
    assert pack_edits([_examples(rng, 5)], [1e-2], [2], batch_size=1).steps == 16  # 10 steps needed
    assert pack_edits([_examples(rng, 9)], [1e-2], [1], batch_size=1).tokens.shape[1] == 16


def test_one_compile_per_bucket(base):
    rng = np.random.default_rng(5)
    keys = jax.random.split(jax.random.PRNGKey(4), 2)
    first = pack_edits([_examples(rng, 3), _examples(rng, 4)], [1e-2, 1e-2], [2, 2], batch_size=2)
    second = pack_edits([_examples(rng, 4), _examples(rng, 2)], [3e-3, 1e-2], [1, 3], batch_size=2)
    assert first.tokens.shape == second.tokens.shape and first.steps == second.steps
    before = inner_train_edits._cache_size()
    _run(base, first, keys)
    _run(base, second, keys)
    assert inner_train_edits._cache_size() - before == 1


def test_non_finite_edit_fails_alone(base, edits):
    keys = jax.random.split(jax.random.PRNGKey(6), 3)
    good, _ = _run(base, pack_edits(edits, [1e-2] * 3, [2] * 3, batch_size=2), keys)
    lora, metrics = _run(base, pack_edits(edits, [1e-2, np.inf, 1e-2], [2] * 3, batch_size=2), keys)
    summary = summarize(jax.tree.map(np.asarray, metrics))
    assert [s["ok"] for s in summary] == [True, False, True]
    assert "non-finite" in summary[1]["reason"]
    for i in (0, 2):
        _close(jax.tree.map(lambda x: x[i], lora), jax.tree.map(lambda x: x[i], good), 1e-6)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(lora))


def test_chunks_equal_one_call_and_truncation_is_counted(base, edits):
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    packed = pack_edits(edits, [1e-2] * 3, [2] * 3, batch_size=2)
    whole, _ = _run(base, packed, keys)
    parts = list(train_in_chunks(base, CFG, ICFG, packed, keys, edits_per_chunk=2))
    assert [(a, b) for a, b, _, _ in parts] == [(0, 2), (2, 3)]
    chunked = jax.tree.map(lambda *xs: jnp.concatenate(xs), *[l for _, _, l, _ in parts])
    _close(whole, chunked, 1e-5)
    cut = pack_edits(edits, [1e-2] * 3, [1] * 3, max_len=8)
    assert cut.truncated == sum(len(t) > 8 for ex in edits for t, _ in ex) > 0
    assert cut.tokens.shape[-1] == 16


def test_loss_on_output_only(smollm):
    _, _, tok = smollm
    t, m = tokenize_document(tok, ("Q: colour of snow? A:", " white"), loss="output")
    completion = tok.encode(" white", add_special_tokens=False) + [tok.eos_token_id]
    assert t[-len(completion):] == completion and sum(m) == len(completion) and m[-len(completion):] == [1] * len(completion)
    t2, m2 = tokenize_document(tok, "Snow is white.")
    assert t2[-1] == tok.eos_token_id and sum(m2) == len(t2) and tok.bos_token_id not in t2[:1] or True


PASSAGE = ["The Varnholt Observatory was founded in 1873 by the astronomer Ilsa Quennigan.",
           "The Varnholt Observatory stands on Mount Tessaly, 2,140 metres above sea level.",
           "Ilsa Quennigan discovered the comet Brannoch-7 from the Varnholt Observatory in 1881."]
OTHER = ["The Plimsey Ferry crosses the Osk Estuary between Dunvale and Hartwick every forty minutes.",
         "The Plimsey Ferry was first launched in 1952 and is painted orange."]
QUESTIONS = [("Who founded the Varnholt Observatory?", "Ilsa Quennigan"),
             ("On which mountain does the Varnholt Observatory stand?", "Mount Tessaly"),
             ("Which comet did Ilsa Quennigan discover?", "Brannoch-7")]


def test_inner_update_teaches_smollm2_its_passage(smollm):
    """After the update on a passage's sentences, its answers' log-prob rises; an edit on another passage
    does not raise them nearly as much."""
    from seal_jax.engine.answering import answer_logprobs
    cfg, params, tok = smollm
    icfg = InnerConfig(lora=LoraSpec(rank=16, alpha=32.0, targets=("q_proj", "v_proj")), length_buckets=1)
    examples = [[tokenize_document(tok, f"Varnholt Observatory\n{s}") for s in PASSAGE],
                [tokenize_document(tok, f"Plimsey Ferry\n{s}") for s in OTHER]]
    packed = pack_edits(examples, [1e-3, 1e-3], [4, 4])
    edits, hp = packed.arrays()
    lora, metrics = inner_train_edits(params, edits, jax.random.split(jax.random.PRNGKey(0), 2), hp, cfg=cfg,
                                      icfg=icfg, steps=packed.steps)
    summary = summarize(jax.tree.map(np.asarray, metrics))
    assert all(s["ok"] for s in summary)
    for e, n in enumerate((len(PASSAGE), len(OTHER))):  # mean loss of the last epoch < of the first
        losses = np.asarray(metrics["loss"][e])[np.asarray(metrics["active"][e])]
        assert losses[-n:].mean() < losses[:n].mean() - 0.5, losses
    qs, ans = [q for q, _ in QUESTIONS], [a for _, a in QUESTIONS]
    base_lp = answer_logprobs(params, cfg, tok, qs, ans)
    rows = answer_logprobs(params, cfg, tok, qs * 2, ans * 2, lora=lora, lora_scale=icfg.lora.scale,
                           adapter_of_row=[0] * 3 + [1] * 3)
    own, other = rows[:3] - base_lp, rows[3:] - base_lp
    assert own.mean() > 0.5, (own, other)
    assert own.mean() > other.mean() + 0.4, (own, other)
