"""Knowledge incorporation (SEAL section 3.1): learn to write implications that teach the model a passage.

    passages.py    Passage: SEAL's SQuAD format, the demo corpus, hub datasets, your own .txt / .md files
    self_edit.py   self-edit prompts; a self-edit -> training documents
    grading.py     exact / contains / f1, and LLM judges as graders
    judge.py       LLM judges: a seal-jax model or an OpenAI-compatible endpoint
    settings.py    KnowledgeSettings: everything a run is told, typed
    updates.py     one update: train on documents, answer the questions without the passage, grade
    evaluation.py  SEAL's conditions (base, passage, self-edit, file), single / CPT, continual
    domain.py      KnowledgeDomain: the ReST-EM plug-in
"""
