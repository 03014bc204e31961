"""Tokenizers through transformers (HF directory or GGUF), chat templates, and loss-masked examples.

`encode_example(tok, prompt, completion)` is the one place that turns text into training tokens: the
prompt (possibly wrapped in the chat template) carries no loss, the completion and its EOS do.
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Optional, Sequence

logging.getLogger("transformers").setLevel(logging.ERROR)


GGUF_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "seal_jax", "tokenizers")


def load_tokenizer(path: str):
    """A transformers tokenizer for a HF directory or a .gguf file (local files only)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(gguf_tokenizer_dir(path) if path.endswith(".gguf") else path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def gguf_tokenizer_dir(path: str) -> str:
    """A HF tokenizer directory made once from a .gguf file and kept in GGUF_CACHE (keyed by the file's name,
    size and mtime): transformers rebuilds a GGUF tokenizer from its vocabulary in ~20 s, a saved one loads in
    well under a second, and every command starts by loading it."""
    from transformers import AutoTokenizer
    stat = os.stat(path)
    cached = os.path.join(os.path.expanduser(GGUF_CACHE), f"{os.path.basename(path)}-{stat.st_size}-{stat.st_mtime_ns}")
    if not os.path.isdir(cached):
        tok = AutoTokenizer.from_pretrained(os.path.dirname(path) or ".", gguf_file=os.path.basename(path))
        staging = f"{cached}.{os.getpid()}.tmp"
        tok.save_pretrained(staging)
        try:
            os.rename(staging, cached)  # atomic: a concurrent process sees all of it or none
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return cached


def chat_prompt(tok, user_message: str, system: Optional[str] = None) -> list[int]:
    """Token ids of one user turn in the chat template, ending with the assistant generation prompt."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_message}]
    if getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return tok.encode(user_message, add_special_tokens=False)


def encode_prompts(tok, prompts: Sequence[str], chat: bool = True) -> list[list[int]]:
    return [chat_prompt(tok, p) if chat else tok.encode(p, add_special_tokens=False) for p in prompts]


def encode_example(tok, prompt: str, completion: str, chat: bool = False) -> tuple[list[int], list[int]]:
    """(tokens, loss_mask) for prompt -> completion + EOS; loss only on the completion and EOS.

    With an empty prompt and chat=False this is plain language modelling on `completion` + EOS.
    """
    p = chat_prompt(tok, prompt) if chat else tok.encode(prompt, add_special_tokens=False)
    c = tok.encode(completion, add_special_tokens=False) + [tok.eos_token_id]
    return p + c, [0] * len(p) + [1] * len(c)


def stop_token_ids(tok, extra: Sequence[str] = ()) -> list[int]:
    """EOS plus any extra stop strings that are single tokens (e.g. `<|im_end|>`, `<|eot_id|>`)."""
    ids = {tok.eos_token_id}
    for s in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", *extra):
        tid = tok.convert_tokens_to_ids(s)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid is not None and tid >= 0:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)
