"""Passages, the knowledge domain's contexts: SEAL's SQuAD format, the demo corpus, hub datasets, your own files.

A passage is `{title, context, questions: [{question, answer}]}` (SEAL's SQuAD format). The model reads a
passage and writes a self-edit; after training on it, it answers the questions *without* the passage.
`read_documents` + `document_passages` turn plain .txt / .md files into passages (no questions) for `absorb`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from typing import Optional, Sequence

DEMO_CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "data", "demo_corpus.json")



@dataclasses.dataclass(frozen=True)
class Passage:
    id: str
    title: str
    context: str
    questions: tuple[tuple[str, str], ...]  # (question, answer)


# ---- data ---------------------------------------------------------------------------------------


def parse_passages(records: Sequence[dict], source: str = "input") -> list[Passage]:
    """Validate SQuAD-style records; a malformed one is an error naming its index and field."""
    out = []
    for i, r in enumerate(records):
        where = f"{source}: record {i}"
        if not isinstance(r, dict):
            raise ValueError(f"{where} is a {type(r).__name__}, expected an object with title/context/questions")
        for field in ("title", "context", "questions"):
            if field not in r or r[field] is None:
                raise ValueError(f"{where} has no '{field}' field")
        if not str(r["context"]).strip():
            raise ValueError(f"{where} has an empty 'context'")
        if not r["questions"]:
            raise ValueError(f"{where} has no questions")
        qs = []
        for j, q in enumerate(r["questions"]):
            for field in ("question", "answer"):
                if not isinstance(q, dict) or not str(q.get(field) or "").strip():
                    raise ValueError(f"{where}, question {j} has no '{field}'")
            qs.append((str(q["question"]).strip(), str(q["answer"]).strip()))
        out.append(Passage(str(r.get("id", f"{source}:{i}")), str(r["title"]).strip(), str(r["context"]).strip(),
                           tuple(qs)))
    return out


def load_passages(source: str = "demo", limit: Optional[int] = None) -> list[Passage]:
    """Passages from 'demo' (shipped corpus), a local .json/.jsonl file in SEAL's format, or a hub SQuAD dataset
    `name[:split]` (online; split train or validation, default validation), e.g. 'rajpurkar/squad:train'."""
    if source == "demo":
        source = DEMO_CORPUS
    if os.path.exists(source):
        records = _read_json_records(source)
    elif "/" in source and not source.startswith((".", "/")) and not source.endswith((".json", ".jsonl")):
        name, _, split = source.partition(":")
        records = _squad_from_hub(name, split or "validation")
    else:
        raise FileNotFoundError(f"passages {source!r}: no such file (use 'demo', a .json/.jsonl path or a hub name)")
    passages = parse_passages(records, os.path.basename(source))
    return passages[:limit] if limit else passages


def json_lines(text: str, path: str) -> list:
    """The values of a JSON-lines text; a bad line is an error naming its number."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {n} is not readable as JSON ({e.msg})") from None
    return rows


def _read_json_records(path: str) -> list[dict]:
    """Records of a local JSON (a list, or {"data": [...]}) or JSONL file, read through `datasets`."""
    import datasets
    from datasets.exceptions import DatasetGenerationError
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16).lstrip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({e})") from None
    if not head.startswith(("[", "{")):
        raise ValueError(f"{path}: not readable as JSON (expected a list of records or JSON lines)")
    datasets.disable_progress_bars()
    kw = {"field": "data"} if head.startswith("{") and '"data"' in head[:200] else {}
    if head.startswith("{") and not kw:  # JSON lines: name the first bad line (datasets' error does not)
        with open(path, encoding="utf-8") as f:
            json_lines(f.read(), path)
    try:
        ds = datasets.load_dataset("json", data_files=path, split="train", **kw)
    except (DatasetGenerationError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON ({str(e).splitlines()[0][:200]})") from None
    return ds.to_list()


def seal_title(title: str) -> str:
    """SEAL's SQuAD title: the hub's Wikipedia page name with every `_` a space, nothing else changed. SEAL ships
    no conversion script; its files show the rule: none of the 2,067 titles of data/squad_val.json holds a `_`
    ("Sky (United Kingdom)", "Fresno, California"), and a percent escape stays ("Jehovah%27s Witnesses",
    data/synthetic_data/train/iter0_train.json)."""
    return title.replace("_", " ")


def _squad_from_hub(name: str, split: str = "validation") -> list[dict]:
    """A hub SQuAD dataset split (needs internet), grouped into SEAL's format: one record per context, in order of
    first appearance, each question with its first gold answer, the title by SEAL's rule (`seal_title`)."""
    import datasets
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown name or split: datasets raises many kinds
        raise RuntimeError(
            f"could not load the {split!r} split of {name!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); without network, pass a local file in SEAL's "
            "format instead (a JSON list of {title, context, questions: [{question, answer}]}, e.g. SEAL's "
            "squad_train.json / squad_val.json) with --config.data.source / --config.data.eval_source") from None
    grouped: dict[str, dict] = {}
    for row in ds:
        rec = grouped.setdefault(row["context"], {"title": seal_title(row["title"]), "context": row["context"],
                                                  "questions": []})
        rec["questions"].append({"question": row["question"], "answer": row["answers"]["text"][0]})
    return list(grouped.values())


def seal_subset(items: Sequence, seed: int = 42, start: int = 0, n: int = 0) -> list:
    """SEAL's subset rule (make_squad_data.py lines 116-119): the whole list shuffled by Python's `random` seeded
    with `seed`, then items [start, start + n) (n <= 0: to the end). On SEAL's squad_val.json, seed 42, start 0,
    n 200 gives its 200 evaluation passages (974 questions)."""
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)  # the same draws as random.seed(seed); random.shuffle(...)
    return shuffled[start:start + n] if n > 0 else shuffled[start:]


def split_passages(passages: Sequence[Passage], held_out: int) -> tuple[list[Passage], list[Passage]]:
    """A fixed split: the last `held_out` passages are for evaluation, the rest for RL."""
    if not 0 < held_out < len(passages):
        raise ValueError(f"held_out={held_out} must be between 1 and {len(passages) - 1}")
    return list(passages[:-held_out]), list(passages[-held_out:])


# ---- your own documents ---------------------------------------------------------------------------


def read_documents(path: str) -> list[tuple[str, str]]:
    """[(path, text)] of the .txt/.md files at `path` (a file or a directory, sorted)."""
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".txt", ".md")))
        if not files:
            raise FileNotFoundError(f"{path}: no .txt or .md files")
    elif os.path.isfile(path):
        files = [path]
    else:
        raise FileNotFoundError(f"documents {path!r}: no such file or directory")
    docs = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            text = fh.read().strip()
        if not text:
            raise ValueError(f"{f}: the document is empty")
        docs.append((f, text))
    return docs


def document_passages(text: str, title: str, words: int, source: str = "") -> list[Passage]:
    """Passages of at most about `words` words on paragraph boundaries; a paragraph longer than that is split
    on sentence boundaries (then on words). A leading markdown heading is the title. Ids are
    `{source}:{title}#{i}`, so two files with the same heading never share a passage id."""
    m = re.match(r"^#+\s*(.+)\n", text)
    if m:
        title, text = m.group(1).strip(), text[m.end():]
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    paras = [piece for p in paras for piece in _split_long(p, words)]
    chunks, cur = [], []
    for p in paras:
        if cur and sum(len(x.split()) for x in cur) + len(p.split()) > words:
            chunks.append(" ".join(cur))
            cur = []
        cur.append(p)
    if cur:
        chunks.append(" ".join(cur))
    return [Passage(f"{source}:{title}#{i}" if source else f"{title}#{i}", title, c, ()) for i, c in enumerate(chunks)]


def _split_long(paragraph: str, words: int) -> list[str]:
    """A paragraph of more than `words` words as pieces of at most `words`, on sentence ends where possible."""
    if len(paragraph.split()) <= words:
        return [paragraph]
    pieces, cur = [], []
    for sentence in re.split(r"(?<=[.!?])\s+", paragraph):
        w = sentence.split()
        while len(w) > words:  # one sentence longer than a passage: cut it on words
            pieces.append(" ".join(w[:words]))
            w = w[words:]
        if cur and len(cur) + len(w) > words:
            pieces.append(" ".join(cur))
            cur = []
        cur += w
    if cur:
        pieces.append(" ".join(cur))
    return pieces
