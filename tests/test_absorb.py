"""absorb / ask on the real SmolLM2 with invented-fact documents: the adapter teaches, the base does not know."""
import json
import os

import pytest

from seal_jax.domains.knowledge.grading import contains
from seal_jax.domains.knowledge.passages import document_passages, load_passages, read_documents
from seal_jax.runtime.workdir import write_atomically


def test_split_and_read(tmp_path):
    text = "# Varnholt\n\n" + "\n\n".join(["word " * 60] * 5)
    ps = document_passages(text, "file", 150)
    assert ps[0].title == "Varnholt" and len(ps) == 3 and all(len(p.context.split()) <= 150 for p in ps)
    one_paragraph = " ".join(f"Sentence {i} says something about the lake." for i in range(100))  # 700 words
    ps = document_passages(one_paragraph, "file", 150, source="1")
    assert len(ps) == 5 and all(len(p.context.split()) <= 150 for p in ps) and ps[0].id == "1:file#0"
    assert all(p.context.endswith(".") for p in ps)  # cut on sentence ends
    assert " ".join(p.context for p in ps) == one_paragraph
    assert [len(p.context.split()) for p in document_passages("w " * 400, "f", 150)] == [150, 150, 100]
    (tmp_path / "a.md").write_text("hello")
    (tmp_path / "skip.json").write_text("{}")
    assert [os.path.basename(p) for p, _ in read_documents(str(tmp_path))] == ["a.md"]
    (tmp_path / "b.txt").write_text("   ")
    with pytest.raises(ValueError, match="b.txt: the document is empty"):
        read_documents(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        read_documents(str(tmp_path / "missing"))


def test_write_atomically_leaves_nothing_on_crash(tmp_path):
    out = tmp_path / "adapter"

    def crash(tmp):
        open(os.path.join(tmp, "adapter_config.json"), "w").write("{}")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_atomically(str(out), False, crash)
    assert not out.exists() and os.listdir(tmp_path) == []
    write_atomically(str(out), False, lambda tmp: open(os.path.join(tmp, "x"), "w").write("1"))
    with pytest.raises(FileExistsError, match="--overwrite"):  # never replaced without overwrite
        write_atomically(str(out), False, lambda tmp: open(os.path.join(tmp, "y"), "w").write("2"))
    assert os.listdir(out) == ["x"]
    write_atomically(str(out), True, lambda tmp: open(os.path.join(tmp, "y"), "w").write("2"))
    assert os.listdir(out) == ["y"] and sorted(os.listdir(tmp_path)) == ["adapter"]


def test_absorb_refuses_existing_outputs_before_any_work(tmp_path):
    from seal_jax.cli.absorb import absorb
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep.txt").write_text("mine")
    # the documents path does not exist: a refusal must come first, before reading or loading anything
    with pytest.raises(FileExistsError, match="merged exists"):
        absorb("no-such-model", str(tmp_path / "nodocs"), str(tmp_path / "adapter"), merge=str(tmp_path / "merged"))
    with pytest.raises(ValueError, match="--per_doc"):
        absorb("no-such-model", str(tmp_path / "nodocs"), str(tmp_path / "a2"), merge=str(tmp_path / "m2"),
               per_doc=True)
    assert (tmp_path / "merged" / "keep.txt").read_text() == "mine"


def test_absorb_then_ask_learns_invented_facts(tmp_path, smollm_hf):
    from seal_jax.cli.absorb import absorb
    from seal_jax.cli.ask import answers
    passages = load_passages("demo")[:3]
    docs = tmp_path / "docs"
    docs.mkdir()
    for p in passages:
        (docs / f"{p.title}.txt").write_text(p.context)
    out = tmp_path / "adapter"
    merged = tmp_path / "merged"
    manifest = absorb("smollm2-135m", str(docs), str(out), merge=str(merged), log=lambda *_: None)
    assert os.path.exists(out / "adapter_config.json") and os.path.exists(out / "adapter_model.safetensors")
    saved = json.load(open(out / "manifest.json"))
    assert len(saved["sources"]) == 3 and all(len(s["sha256"]) == 64 for s in saved["sources"])
    assert saved["settings"]["epochs"] == manifest["settings"]["epochs"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        absorb("smollm2-135m", str(docs), str(out), log=lambda *_: None)
    qs = [(q, a) for p in passages for q, a in p.questions]
    res = answers("smollm2-135m", [str(out)], [q for q, _ in qs], compare=True)
    base = sum(contains(t, a) for t, (_, a) in zip(res["base"], qs)) / len(qs)
    adapted = sum(contains(t, a) for t, (_, a) in zip(res["adapted"], qs)) / len(qs)
    print(f"answer-contained accuracy: base {base:.2f}, adapted {adapted:.2f} on {len(qs)} questions")
    assert base <= 0.10 and adapted >= 0.40, (base, adapted)

    # The adapter is a real PEFT adapter on the HF model, and --merge wrote the same model as plain HF weights.
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    ids = torch.tensor([list(range(100, 140))])
    with torch.no_grad():
        base_logits = smollm_hf(ids).logits.numpy()
        wrapped = PeftModel.from_pretrained(smollm_hf, str(out)).eval()  # injects LoRA into the shared fixture
        peft_logits = wrapped(ids).logits.numpy()
        wrapped.unload()  # ... so take it out again
        assert np.array_equal(smollm_hf(ids).logits.numpy(), base_logits)
        merged_logits = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32).eval()(ids).logits.numpy()
    np.testing.assert_allclose(merged_logits, peft_logits, atol=2e-3, rtol=1e-3)
    assert np.abs(peft_logits - base_logits).max() > 0.1  # the adapter changes the model
