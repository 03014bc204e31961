"""PNG plots of a run's results: evaluation conditions as bars, RL curves from metrics.jsonl, forgetting matrices."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_conditions(results: dict, path: str, title: str = "held-out accuracy (no passage in context)") -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(results)
    bars = ax.bar(names, [results[n] for n in names], color="#4C72B0")
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_table2(rows: list[dict], path: str) -> str:
    """Ours beside the paper's Table 2 (%), one panel per mode; rows: {mode, condition, ours, paper}."""
    plt = _plt()
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sel = [r for r in rows if r["mode"] == mode]
        x = np.arange(len(sel))
        ours = ax.bar(x - 0.2, [r["ours"] for r in sel], 0.4, label="ours", color="#4C72B0")
        paper = ax.bar(x + 0.2, [r["paper"] if r["paper"] is not None else 0.0 for r in sel], 0.4, label="paper",
                       color="#DD8452")
        ax.bar_label(ours, fmt="%.1f", fontsize=7)
        ax.bar_label(paper, labels=["-" if r["paper"] is None else f"{r['paper']:.1f}" for r in sel], fontsize=7)
        ax.set_xticks(x, [r["condition"] for r in sel], rotation=20, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"SEAL Table 2, {mode}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_rl(metrics_path: str, path: str) -> Optional[str]:
    if not os.path.exists(metrics_path):
        return None
    rows = [json.loads(l) for l in open(metrics_path) if l.strip()]
    rows = [r for r in rows if "reward_mean" in r]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [r["step"] for r in rows]
    for k in ("reward_mean", "reward_max", "baseline_accuracy", "valid_fraction", "kept_fraction"):
        if all(k in r for r in rows):
            ax.plot(steps, [r[k] for r in rows], marker="o", label=k)
    ax.set_xlabel("RL iteration")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_forgetting(acc: np.ndarray, path: str) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(acc, vmin=0, vmax=1, cmap="viridis")
    ax.set_xlabel("passage evaluated")
    ax.set_ylabel("after update on passage")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
