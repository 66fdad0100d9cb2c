"""The run report: JSON, PNG plots, and one HTML page that shows them with the key figures
(people would rather look than read)."""

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
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        xs = np.array([p["multiple"] for p in augmentation], np.float64)
        for ax, against in zip(axes, ("teacher", "labels")):
            for offset, kind in ((-0.04, "cross"), (0.04, "two_tower")):
                key = f"spearman_{kind}_vs_{against}"
                ys = np.array([p[key] for p in augmentation])
                lo_hi = np.array([p[key + "_ci95"] for p in augmentation])
                ax.errorbar(xs + offset, ys, yerr=[ys - lo_hi[:, 0], lo_hi[:, 1] - ys], marker="o",
                            capsize=3, label=kind.replace("_", "-"))
            ax.set(xlabel="augmented pairs / labelled pairs", title=f"vs {against} (test, 95% bootstrap)")
            ax.legend()
        axes[0].set_ylabel("Spearman")
        fig.suptitle("Quality against augmentation size")
        fig.tight_layout()
        fig.savefig(out_dir / "augmentation_curve.png", dpi=110)
        plt.close(fig)
        files["augmentation_curve"] = str(out_dir / "augmentation_curve.png")
    (out_dir / "report.json").write_text(json.dumps({**result, "plots": files}, indent=2, default=str))
    files["json"] = str(out_dir / "report.json")
    (out_dir / "report.html").write_text(_html(result, files))
    files["html"] = str(out_dir / "report.html")
    return files


def _html(result: dict, plots: dict[str, str]) -> str:
    """A self-contained page: the figures a reviewer checks first, then the plots."""
    from html import escape

    metrics = result.get("metrics", {})
    rows = []
    for model in ("teacher", "cross", "two_tower"):
        m = metrics.get(model) or {}
        rows.append("<tr><td>{}</td>{}</tr>".format(escape(model), "".join(
            f"<td>{m.get(k, float('nan')):.3f}</td>" for k in
            ("spearman_vs_labels", "spearman_vs_teacher", "pearson_vs_labels", "mse_vs_labels", "ndcg10"))))
    decision = result.get("decision", {})
    images = "".join(f'<figure><img src="{Path(path).name}" alt="{escape(name)}"><figcaption>'
                     f"{escape(name.replace('_', ' '))}</figcaption></figure>"
                     for name, path in plots.items() if path.endswith(".png"))
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>pairstream training run {escape(str(result.get('version')))}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}td,th{{padding:4px 10px;
border-bottom:1px solid #ddd;text-align:right}}td:first-child{{text-align:left}}
figure{{display:inline-block;margin:1em}}img{{max-width:520px}}</style></head><body>
<h1>Training run {escape(str(result.get('version')))}</h1>
<p>Decision: <b>{'promoted' if decision.get('promoted') else 'not promoted'}</b>
({escape(str(decision.get('metric')))} candidate {decision.get('candidate')}, incumbent
{decision.get('incumbent')}). Train pairs {metrics.get('n_train')}, teacher-augmented
{metrics.get('n_augmented')}, test {metrics.get('n_test')}; {result.get('minutes')} minutes.
ONNX parity (max |onnx - torch|): {escape(str(metrics.get('onnx_parity_max_abs')))}.</p>
<table><tr><th>model (test split)</th><th>Spearman vs labels</th><th>Spearman vs teacher</th>
<th>Pearson vs labels</th><th>MSE vs labels</th><th>NDCG@10</th></tr>{''.join(rows)}</table>
{images}</body></html>
"""
