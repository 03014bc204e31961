"""`evaluate` on a mesh (8 fake CPU devices, tests/conftest.py) gives the single-device result: the :smoke
knowledge evaluation (single passage, CPT and continual) and the ARC one, run through `cli.evaluate.evaluate`
(the command's own start: `cli.common.start_run` builds c.mesh and loads the model onto it).

The tiny random model scores 0 on every condition, so equal accuracies alone would prove little: the test also
compares what each step produced, recorded on the way (the self-edits sampled into training documents, every
inner update's last loss, every answer), and checks that the sharded run really trained edit-parallel on the
mesh its config names.
"""
import json

import jax
import numpy as np
from conftest import load_config



def _record(monkeypatch):
    """Spy on the steps the evaluation runs: {"meshes": [mesh shape per chunked update], "lora": [per edit,
    its trained LoRA, flat], "docs", "losses",
    "answers": [per knowledge update or no-update call], "merged": [(q_proj after each continual merge, its
    mesh)]}."""
    from seal_jax.domains.knowledge import evaluation as knowledge
    from seal_jax.engine import adapt
    seen = {"meshes": [], "lora": [], "docs": [], "losses": [], "answers": [], "merged": []}

    real_chunks = adapt.train_in_chunks

    def train_in_chunks(*a, **kw):  # every inner update: its mesh, and each edit's trained LoRA
        mesh = a[6] if len(a) > 6 else kw.get("mesh")
        seen["meshes"].append(None if mesh is None else dict(mesh.shape))
        for start, stop, lora, metrics in real_chunks(*a, **kw):
            seen["lora"] += [np.concatenate([np.ravel(np.asarray(x)[i]) for x in jax.tree.leaves(lora)])
                             for i in range(stop - start)]
            yield start, stop, lora, metrics

    real_adapt, real_baseline, real_step = knowledge.adapt_and_grade, knowledge.baseline, knowledge.continual_step

    def adapt_and_grade(*a, **kw):
        for chunk in real_adapt(*a, **kw):
            for g in chunk:
                seen["docs"].append(list(g.item.documents))
                seen["losses"].append(g.final_loss)
                seen["answers"].append(list(g.answers))
            yield chunk

    def baseline(*a, **kw):
        res = real_baseline(*a, **kw)
        seen["answers"] += [r["answers"] for r in res.values()]
        return res

    def continual_step(*a, **kw):  # continual: the weights after each merged update
        merged = real_step(*a, **kw)
        q = merged["layers"]["attn"]["q_proj"]["kernel"]
        seen["merged"].append((np.asarray(q), getattr(q.sharding, "mesh", None)))
        return merged

    monkeypatch.setattr(adapt, "train_in_chunks", train_in_chunks)
    monkeypatch.setattr(knowledge, "continual_step", continual_step)
    monkeypatch.setattr(knowledge, "adapt_and_grade", adapt_and_grade)
    monkeypatch.setattr(knowledge, "baseline", baseline)
    return seen


def _same_loras(got, want, n):
    """`n` trained LoRAs each, equal up to reduction-order noise (tests/test_sharding.py's tolerance)."""
    assert len(got) == len(want) == n
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=3e-4, rtol=1e-3)
    assert not np.allclose(want[0], want[1])  # different edits train different adapters


def _evaluate(c, out, monkeypatch):
    from seal_jax.cli.evaluate import evaluate
    with monkeypatch.context() as m:
        seen = _record(m)
        result = evaluate(c, str(out))
    assert json.load(open(out / "eval.json")) == json.loads(json.dumps(result))
    return result, seen


def test_knowledge_smoke_evaluation_sharded_equals_single_device(tmp_path, monkeypatch):
    c = load_config("knowledge_eval.py")
    c.data.offset = 44  # the demo corpus' last 2 passages (each with its questions)
    # base: answers; self_edit: sampled self-edits, inner updates, adapted answers; cpt: one update over both
    # passages; continual: updates merged into the weights in turn, the model re-asked after each
    c.eval.update(conditions="base,self_edit", mode="single,cpt", continual=True, continual_k=2,
                  continual_sequences=1, continual_condition="passage")
    single, seen_single = _evaluate(c, tmp_path / "single", monkeypatch)
    c.mesh.update(edit=-1, fsdp=2, tp=2)  # 8 devices: edit=2 x fsdp=2 x tp=2
    sharded, seen_sharded = _evaluate(c, tmp_path / "sharded", monkeypatch)

    assert set(seen_single["meshes"]) == {None}
    assert seen_sharded["meshes"] and all(m == {"edit": 2, "fsdp": 2, "tp": 2} for m in seen_sharded["meshes"])
    # self_edit: one update per passage (single), one over both (cpt)
    assert len(seen_single["losses"]) == 3 and np.all(np.isfinite(seen_single["losses"]))
    assert len({round(x, 3) for x in seen_single["losses"]}) > 1
    assert seen_sharded["docs"] == seen_single["docs"]  # the same self-edits sampled on the mesh
    # answers: base (2 passages, in each mode), self_edit single (2) and cpt (1), continual (2 + 1 + 2)
    assert len(seen_single["answers"]) == 12
    assert len(seen_single["merged"]) == 2 and not np.allclose(*[q for q, _ in seen_single["merged"]])
    for (got, mesh), (want, _) in zip(seen_sharded["merged"], seen_single["merged"]):
        assert mesh is not None and dict(mesh.shape) == {"edit": 2, "fsdp": 2, "tp": 2}  # merged on the mesh
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(seen_sharded["losses"], seen_single["losses"], rtol=1e-4, atol=1e-5)
    _same_loras(seen_sharded["lora"], seen_single["lora"], 3)
    assert seen_sharded["answers"] == seen_single["answers"]
    for key in ("accuracy", "table2", "continual", "passages", "questions"):
        assert sharded[key] == single[key], key
    assert len(single["continual"]["mean"]) == 3


def test_arc_smoke_evaluation_sharded_equals_single_device(tmp_path, monkeypatch):
    from seal_jax.cli.evaluate import evaluate
    from seal_jax.domains.arc import evaluation
    c = load_config("arc_eval.py")
    c.eval.conditions = "oracle"  # test-time training, then voted answers (a random model's self-edits never
    # parse, so ttt_no_rl would train nothing; icl answers as the oracle's adapted models do, untrained)
    c.data.limit = 2  # 2 synthetic tasks
    runs = []
    for mesh in (dict(edit=0), dict(edit=-1, fsdp=2, tp=1)):  # one device; edit=4 x fsdp=2
        c.mesh.update(mesh)
        solved, real = [], evaluation.adapt_and_solve

        def adapt_and_solve(*a, **kw):
            for chunk in real(*a, **kw):  # the oracle's test-time training, per task
                solved.extend((r.item.uid, r.ok, r.solved, r.attempts, r.train_examples, r.train_tokens)
                              for r in chunk)
                yield chunk
        with monkeypatch.context() as m:
            m.setattr(evaluation, "adapt_and_solve", adapt_and_solve)
            seen = _record(m)
            result = evaluate(c, str(tmp_path / f"run{len(runs)}"))
        runs.append((result, solved, seen["meshes"], seen["lora"]))
    (single, solved_single, meshes_single, lora_single), (sharded, solved_sharded, meshes_sharded, lora_sharded) = runs
    _same_loras(lora_sharded, lora_single, 2)
    assert set(meshes_single) == {None}
    assert meshes_sharded and all(m == {"edit": 4, "fsdp": 2, "tp": 1} for m in meshes_sharded)
    assert len(solved_single) == 2 and all(s[4] > 0 for s in solved_single)  # both tasks trained
    assert solved_sharded == solved_single
    assert sharded["success"] == single["success"] and sharded["tasks"] == single["tasks"]
