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
# transformers imported without torch advises that models are unavailable: seal-jax needs only its tokenizers.
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


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
    size and mtime): rebuilding from the vocabulary takes seconds, a saved one loads in well under a second,
    and every command starts by loading it."""
    stat = os.stat(path)
    cached = os.path.join(os.path.expanduser(GGUF_CACHE),
                          f"{os.path.basename(path)}-{stat.st_size}-{stat.st_mtime_ns}-bpe1")
    if not os.path.isdir(cached):
        tok = gguf_tokenizer(path)
        staging = f"{cached}.{os.getpid()}.tmp"
        tok.save_pretrained(staging)
        try:
            os.rename(staging, cached)  # atomic: a concurrent process sees all of it or none
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return cached


# Pre-tokenizer splits by `tokenizer.ggml.pre` (the regexes of the models' own tokenizer.json files); the
# GPT-2 family splits with ByteLevel's built-in regex.
_GPT2_PRE = {"default", "gpt2", "smollm"}
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
_SPLITS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT,
           "smaug-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT}
_CONTROL, _USER_DEFINED = 3, 4  # llama.cpp token types


def gguf_tokenizer(path: str):
    """A transformers fast tokenizer rebuilt from a byte-level BPE GGUF's metadata (`tokenizer.ggml.model`
    "gpt2": SmolLM2, Llama-3, Qwen2), with the `tokenizers` library alone: no torch, unlike transformers'
    own GGUF loader. Control tokens become special tokens, user-defined ones added tokens, as llama.cpp
    matches both whole. tests/test_loading.py checks it against transformers' `gguf_file=` tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    from seal_jax.weights.gguf import gguf_metadata
    meta = gguf_metadata(path)
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or (pre not in _GPT2_PRE and pre not in _SPLITS):
        raise ValueError(f"{path}: its tokenizer (tokenizer.ggml.model={kind!r}, pre={pre!r}) is not a byte-level "
                         "BPE this loader rebuilds; use the model's HF checkpoint directory instead")
    tokens, types = list(meta["tokenizer.ggml.tokens"]), list(meta.get("tokenizer.ggml.token_type", []))
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    backend = Tokenizer(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, dropout=None,
                            continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre in _GPT2_PRE)
    backend.pre_tokenizer = (byte_level if pre in _GPT2_PRE else
                             pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_SPLITS[pre]), "isolated"), byte_level]))
    backend.decoder = decoders.ByteLevel()
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t, k in zip(tokens, types)
                                if k == _CONTROL and set(t) <= alphabet])
    backend.add_tokens([AddedToken(t, normalized=False) for t, k in zip(tokens, types) if k == _USER_DEFINED])

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return None if i is None else tokens[int(i)]
    bos = token("bos")
    if meta.get("tokenizer.ggml.add_bos_token") and bos is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokens.index(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=token("eos"),
                                   unk_token=token("unknown"), pad_token=token("padding"),
                                   chat_template=meta.get("tokenizer.chat_template"))


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


# The end-of-text tokens of SEAL's models beyond the tokenizer's EOS. SEAL samples through vLLM, which stops at the
# tokenizer's EOS, at every eos_token_id of the model's generation_config.json, and at SEAL's own stop lists.
LLAMA3_STOPS = ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")  # Llama-3.2-1B-Instruct (SEAL's ARC model)
CHATML_INSTRUCT_STOPS = ("<|im_end|>", "<|endoftext|>")          # Qwen2.5-7B-Instruct (SEAL's --instruct_model)


def stop_token_ids(tok) -> list[int]:
    """The token ids generation stops at, as SEAL's vLLM servers stop for its model families:

      Llama 3 (`<|eot_id|>` and `<|end_of_text|>` in the vocabulary): EOS, `<|end_of_text|>`, `<|eom_id|>`,
          `<|eot_id|>` (few-shot/inference/engine.py:20 stops at EOS and `<|eot_id|>`; vLLM adds
          Llama-3.2-1B-Instruct's generation_config eos_token_id [128001, 128008, 128009], there and where
          self-edit.py:433 passes no stop list)
      ChatML instruct (EOS `<|im_end|>`): `<|im_end|>` and `<|endoftext|>` (TTT_server.py:127-128 with
          --instruct_model; Qwen2.5-7B-Instruct's generation_config eos_token_id [151645, 151643])
      anything else, Qwen2.5-7B among them: EOS alone (TTT_server.py:129-130, utils.py:92; make_squad_data.py
          passes no stop list; the base model's generation_config eos_token_id is its EOS, `<|endoftext|>`)

    A name that is not a token of this vocabulary (or is its unknown token) is skipped: the embedded SmolLM2
    (ChatML instruct; SEAL has no rule for it) stops at `<|im_end|>` alone, its `<|endoftext|>` being its
    unknown token, as its own generation_config says.
    """
    def token_id(name: str) -> Optional[int]:
        tid = tok.convert_tokens_to_ids(name)
        return tid if isinstance(tid, int) and tid >= 0 and tid != tok.unk_token_id else None

    if token_id("<|eot_id|>") is not None and token_id("<|end_of_text|>") is not None:
        names = LLAMA3_STOPS
    elif tok.eos_token_id is not None and tok.eos_token_id == token_id("<|im_end|>"):
        names = CHATML_INSTRUCT_STOPS
    else:
        names = ()
    ids = {tid for tid in (tok.eos_token_id, *map(token_id, names)) if tid is not None}
    if not ids:
        raise ValueError("the tokenizer has no end-of-text token (eos_token_id is None); set its eos_token")
    return sorted(ids)
