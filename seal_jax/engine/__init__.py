"""The domain-free SEAL machinery, below the domains and above the model.

    inner.py      pack self-edits' documents; one LoRA per edit, trained by a vmapped, scanned AdamW loop
    sampling.py   batched generation with a KV cache; per-row adapters; self-edit sampling
    answering.py  answers (and answer log-probs) from a stack of adapters, one adapter per row
    adapt.py      the one chunked sequence: requests -> inner updates -> answers, regrouped per request
    outer.py      the M-step: keep rules, and SFT of the generator on kept self-edits (the inner update again)
"""
