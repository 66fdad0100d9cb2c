"""The run report: one JSON file and PNG plots (people would rather look than read)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_report(out_dir: Path, result: dict, curves: dict[str, list[float]],
                 scatter: dict[str, tuple[np.ndarray, np.ndarray]],
                 augmentation: list[dict] | None = None) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set(xlabel="epoch", ylabel="mean training loss", title="Training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curves.png", dpi=110)
    plt.close(fig)
    files["loss_curves"] = str(out_dir / "loss_curves.png")
    fig, axes = plt.subplots(1, len(scatter), figsize=(5 * len(scatter), 4), squeeze=False)
    for ax, (name, (teacher, student)) in zip(axes[0], scatter.items()):
        ax.scatter(teacher, student, s=8, alpha=0.6)
        ax.plot([1, 10], [1, 10], color="grey", linewidth=1)
        ax.set(xlabel="teacher score", ylabel=f"{name} score", title=f"{name} vs teacher (test)",
               xlim=(1, 10), ylim=(1, 10))
    fig.tight_layout()
    fig.savefig(out_dir / "teacher_vs_students.png", dpi=110)
    plt.close(fig)
    files["scatter"] = str(out_dir / "teacher_vs_students.png")
    if augmentation:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [p["multiple"] for p in augmentation]
        for key in ("spearman_cross_vs_labels", "spearman_two_tower_vs_labels"):
            ax.plot(xs, [p[key] for p in augmentation], marker="o", label=key)
        ax.set(xlabel="augmented pairs / labelled pairs", ylabel="Spearman (test)",
               title="Quality against augmentation size")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "augmentation_curve.png", dpi=110)
        plt.close(fig)
        files["augmentation_curve"] = str(out_dir / "augmentation_curve.png")
    (out_dir / "report.json").write_text(json.dumps({**result, "plots": files}, indent=2, default=str))
    files["json"] = str(out_dir / "report.json")
    return files
