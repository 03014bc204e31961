"""The batched sampler: HF greedy parity, stop handling, buckets that compile once, per-row LoRA."""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from seal_jax.model.config import preset
from seal_jax.model.lora import LoraSpec, init_lora, stack_loras
from seal_jax.model.transformer import forward, init_params, logits_from_hidden
from seal_jax.engine import sampling
from seal_jax.engine.sampling import SamplingConfig, _generate, bucket, generate, row_bucket
from seal_jax.tokenizer import chat_prompt


def test_greedy_matches_hf_generate_on_smollm2(smollm, smollm_hf):
    cfg, params, tok = smollm
    prompts = [chat_prompt(tok, "Name three colours of the rainbow."), chat_prompt(tok, "What is 2 + 2?")]
    out = generate(params, cfg, tok, prompts, SamplingConfig(max_new_tokens=24))
    for p, got in zip(prompts, out.tokens):
        with torch.no_grad():
            ref = smollm_hf.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)[0, len(p):]
        ref = [t for t in ref.tolist() if t != tok.eos_token_id]
        assert got == ref, (tok.decode(got), tok.decode(ref))
    assert all(t for t in out.texts)


def _greedy_reference(params, cfg, prompt, n):
    """Plain loop: full forward over the growing sequence, argmax, no cache."""
    seq = list(prompt)
    for _ in range(n):
        ids = jnp.asarray([seq])
        h, _ = forward(params, cfg, ids, jnp.arange(len(seq))[None], jnp.ones_like(ids, bool))
        seq.append(int(jnp.argmax(logits_from_hidden(params, h[0, -1]))))
    return seq[len(prompt):]


def test_batched_ragged_prompts_equal_one_at_a_time_and_compile_once():
    cfg = preset("tiny")
    params = init_params(jax.random.PRNGKey(0), cfg)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(3, cfg.vocab_size, n)) for n in (3, 11, 7)]
    sampling = SamplingConfig(max_new_tokens=6)
    out = generate(params, cfg, None, prompts, sampling, stop_ids=[-1])
    for p, got in zip(prompts, out.tokens):
        assert got == _greedy_reference(params, cfg, p, 6)
    compiled = _generate._cache_size()  # (another test may have compiled this bucket already)
    # other prompts, same buckets (B<=4, P<=16): no new compilation
    generate(params, cfg, None, [list(rng.integers(3, cfg.vocab_size, n)) for n in (2, 16, 4)], sampling, stop_ids=[-1])
    assert _generate._cache_size() == compiled
    generate(params, cfg, None, [[3] * 17], sampling, stop_ids=[-1])  # P bucket 32: one new program
    assert _generate._cache_size() == compiled + 1
    assert bucket(3) == 4 and bucket(11, 16) == 16 and bucket(17, 16) == 32
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 12, 13)] == [1, 2, 4, 4, 8, 8, 12, 12, 16]


def test_per_row_stop_tokens():
    cfg = preset("tiny")
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = [[5, 6, 7], [9, 10]]
    free = generate(params, cfg, None, prompts, SamplingConfig(max_new_tokens=8), stop_ids=[-1])
    stop = free.tokens[0][2]  # make row 0 stop at its third token
    out = generate(params, cfg, None, prompts, SamplingConfig(max_new_tokens=8), stop_ids=[stop])
    assert out.tokens[0] == free.tokens[0][:free.tokens[0].index(stop)]
    assert out.num_tokens[0] == free.tokens[0].index(stop) + 1
    cut = free.tokens[1].index(stop) if stop in free.tokens[1] else 8
    assert out.tokens[1] == free.tokens[1][:cut]


def test_sampling_is_seeded_and_top_p_zero_is_greedy():
    cfg = preset("tiny")
    params = init_params(jax.random.PRNGKey(0), cfg)
    prompts = [[5, 6, 7]] * 4
    hot = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.95)
    a = generate(params, cfg, None, prompts, hot, key=jax.random.PRNGKey(1), stop_ids=[-1])
    b = generate(params, cfg, None, prompts, hot, key=jax.random.PRNGKey(1), stop_ids=[-1])
    assert a.tokens == b.tokens and len(set(map(tuple, a.tokens))) > 1  # rows differ, runs repeat
    nucleus_of_one = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=1e-6)
    greedy = generate(params, cfg, None, prompts[:1], SamplingConfig(max_new_tokens=8), stop_ids=[-1])
    c = generate(params, cfg, None, prompts[:1], nucleus_of_one, key=jax.random.PRNGKey(2), stop_ids=[-1])
    assert c.tokens == greedy.tokens


FIVE = [[5, 6, 7], [9, 10], [11, 12, 13, 14], [3, 4], [8, 9, 10]]


@pytest.mark.parametrize("prompts,rows,mesh,stack_lora", [
    ([[5, 6, 7], [9, 10]], [2, 0], False, False),  # 2 rows, 3 adapters: each row's adapter gathered
    (FIVE, [2, 0, 1, 1, 2], False, True),          # 8 rows (5 and 3 fillers), 3 adapters: read from the stack
    (FIVE, [2, 0, 1, 1, 2], True, False)])         # on a mesh rows keep their own adapters
def test_per_row_lora_generation_equals_separate_runs(prompts, rows, mesh, stack_lora, monkeypatch):
    from seal_jax.runtime import sharding
    cfg = preset("tiny")
    params = init_params(jax.random.PRNGKey(0), cfg)
    if mesh:
        params = sharding.shard_params(params, sharding.make_mesh(1, 1, 1, jax.devices()[:1]))
    spec = LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "up"))
    loras = [jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape),
                          init_lora(jax.random.PRNGKey(10 + i), cfg, spec)) for i in range(3)]
    s = SamplingConfig(max_new_tokens=6)
    forms, real = [], sampling._generate
    monkeypatch.setattr(sampling, "_generate", lambda *a, **kw: forms.append(kw["stack_lora"]) or real(*a, **kw))
    got = generate(params, cfg, None, prompts, s, lora=stack_loras(loras), lora_scale=spec.scale, adapter_of_row=rows,
                   stop_ids=[-1])
    assert forms == [stack_lora]
    for p, r, g in zip(prompts, rows, got.tokens):
        one = generate(params, cfg, None, [p], s, lora=loras[r], lora_scale=spec.scale, stop_ids=[-1])
        assert g == one.tokens[0]
    base = generate(params, cfg, None, prompts, s, stop_ids=[-1])
    assert base.tokens != got.tokens  # the adapters matter


class _IdTokenizer:
    """Decodes ids as text ("5 6 7"); no stop id (-1 is never sampled): every answer is max_new_tokens long."""
    eos_token_id, unk_token_id = -1, None

    def convert_tokens_to_ids(self, token):
        return None

    def batch_decode(self, ids, skip_special_tokens=True):
        return [" ".join(map(str, row)) for row in ids]


def test_answer_per_edit_in_calls_of_max_rows_equals_one_call():
    """`answer_per_edit(max_rows=2)` (ARC :paper bounds its long prefills this way) answers every edit's prompts
    exactly as one call over all rows does, adapter by adapter."""
    from seal_jax.engine.answering import answer_per_edit
    cfg = preset("tiny")
    params = init_params(jax.random.PRNGKey(0), cfg)
    spec = LoraSpec(rank=4, alpha=8.0, targets=("q", "v", "up"))
    loras = stack_loras([jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(i), x.shape),
                                      init_lora(jax.random.PRNGKey(10 + i), cfg, spec)) for i in range(3)])
    per_edit = [[[5, 6, 7], [9, 10]], [[11, 12, 13, 14]], [[3, 4], [8], [20, 21, 22]]]
    s, tok = SamplingConfig(max_new_tokens=6), _IdTokenizer()
    whole = answer_per_edit(params, cfg, tok, per_edit, s, lora=loras, lora_scale=spec.scale)
    split = answer_per_edit(params, cfg, tok, per_edit, s, lora=loras, lora_scale=spec.scale, max_rows=2)
    assert [len(a) for a in whole] == [2, 1, 3] and split == whole
    assert all(len(t.split()) == 6 for a in whole for t in a)


def test_generate_cli_prints_completion():
    out = subprocess.run([sys.executable, "-m", "seal_jax.cli.generate", "--model", "smollm2-135m", "--prompt",
                          "What is the capital of France?", "--max_new_tokens", "12", "--temperature", "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


def test_nucleus_cutoff_matches_sorted_reference():
    from seal_jax.engine.sampling import nucleus_cutoff
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(300, 0.3), size=6).astype(np.float32)
    for top_p in (0.1, 0.5, 0.9, 0.95, 1.0):
        cut = np.asarray(nucleus_cutoff(jnp.asarray(probs), top_p))[:, 0]
        for row, c in zip(probs, cut):
            cum = np.cumsum(np.sort(row)[::-1].astype(np.float64))
            # smallest prefix of the sorted distribution reaching top_p (bounds absorb float32 rounding)
            k = [min(len(row), int(np.searchsorted(cum, top_p * f)) + 1) for f in (1 - 1e-5, 1 + 1e-5)]
            kept = int((row >= c).sum())
            assert (kept == len(row)) if top_p == 1.0 else (k[0] <= kept <= k[1]), (top_p, kept, k)
