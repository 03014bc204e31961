"""Task families SEAL learns to write self-edits for, each behind the one interface in base.py (`Domain`).

    base.py        Domain: load data, self-edit prompt, items from self-edits, score, record, keep, M-step target,
                   metrics, final evaluation
    knowledge/     knowledge incorporation: passages -> implications -> answers without the passage
    arc/           few-shot ARC: a task's demonstrations -> a test-time-training configuration -> solved or not
"""
