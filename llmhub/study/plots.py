"""Every figure the report draws, from results files into assets/ (the numbers are the ones the
results files hold; nothing is typed in):

- accuracy vs training samples (sample-efficiency studies, with the original study's dashed if asked),
- ROUGE by method (zero-shot, few-shot, fine-tuned),
- per method study, the main test metric with its 95 % interval against training cost, the Pareto
  frontier drawn (assets/pareto_<study>.png),
- per study, training loss (solid) and validation loss (dashed) against the optimizer step
  (`train.loss_log`, `validation.history`; assets/loss_<study>.png).
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from . import compare
from .records import Record
from .select import (CLS_METRICS, GEN_METRICS, MODE_ORDER, REFERENCE, REFERENCE_LABEL, latest_finetunes, mean,
                     method_studies)


def _file_name(folder: Path) -> str:
    """A study folder as a file name: its last two parts, e.g. llama2_method_comparison."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(folder.parts[-2:]))


def _plot(path: Path, draw, columns: int = 1) -> Path:
    """A figure of `columns` panels side by side; draw() gets the axes (one, or a row of them)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(7 if columns == 1 else 5.5 * columns, 4.2))
    draw(axes)
    for ax in axes if columns > 1 else [axes]:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: reruns give equal files
    plt.close(fig)
    return path


def plot_sample_efficiency(records: list[Record], path: Path, reference: bool = False) -> Path | None:
    """Accuracy vs training samples, one line per model (+ the original study's, dashed, if asked)."""
    rs = [r for r in records if r.mode == "finetune" and r.kind == "classification" and not r.ablation and r.examples]
    if not rs:
        return None
    series = defaultdict(lambda: defaultdict(list))
    for r in rs:
        series[r.label][r.examples].append(r.metrics["accuracy"])

    def draw(ax):
        for label, points in sorted(series.items()):
            xs = sorted(points)
            ax.plot(xs, [mean(points[x]) for x in xs], marker="o", label=label)
        for label, points in (REFERENCE.items() if reference else []):
            ax.plot(sorted(points), [points[x] for x in sorted(points)], ls="--", alpha=0.6,
                    label=f"{label} ({REFERENCE_LABEL})")
        ax.set_xscale("log")
        ax.set_xlabel("training samples")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("20 Newsgroups: accuracy vs training samples")
        ax.legend(fontsize=7)
    return _plot(path, draw)


def plot_rouge(records: list[Record], path: Path) -> Path | None:
    """ROUGE-1/2/L per model and method (zero-shot, few-shot, fine-tuned) on summarization."""
    rs = [r for r in records if r.mode != "finetune" and not r.ablation] + latest_finetunes(records)
    rs = sorted((r for r in rs if r.kind == "generation"), key=lambda r: (r.task, r.model, MODE_ORDER.get(r.mode, 3)))
    if not rs:
        return None

    def draw(ax):
        width = 0.8 / 3
        for i, (key, name) in enumerate(GEN_METRICS[:3]):
            ax.bar([j + i * width for j in range(len(rs))], [r.metrics.get(key) or 0 for r in rs], width, label=name)
        ax.set_xticks([j + width for j in range(len(rs))])
        ax.set_xticklabels([f"{r.label}\n{r.task}" for r in rs], rotation=20, ha="right", fontsize=7)
        ax.set_ylabel("ROUGE F1 (%)")
        ax.set_title("ROUGE by method")
        ax.legend(fontsize=8)
    return _plot(path, draw)


def plot_pareto(records: list[Record], assets: Path) -> dict[Path, Path]:
    """Per method study: the main test metric (95 % interval bars) against training cost, the
    frontier of runs no other run beats on both drawn as a step line; assets/pareto_<study>.png."""
    paths = {}
    for folder, rs in method_studies(records).items():
        key, name = (CLS_METRICS if rs[0].kind == "classification" else GEN_METRICS)[0]

        def draw(ax, rs=rs, key=key, name=name, folder=folder):
            points = []
            for i, r in enumerate(rs):
                x, y = r.train.get("cost_usd") or 0.0, r.metrics[key]
                low, high = compare.interval(r, key) or (y, y)
                ax.errorbar([x], [y], yerr=[[y - low], [high - y]], fmt="o", color=f"C{i % 10}", capsize=3,
                            label=f"{r.path.parent.name} ({r.setup})")
                points.append((x, y))
            frontier, best = [], float("-inf")
            for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
                if y > best:
                    frontier.append((x, y))
                    best = y
            ax.step(*zip(*frontier), where="post", color="grey", alpha=0.5, lw=1, label="Pareto frontier")
            per_hour = next((r.train["cost_per_hour_usd"] for r in rs if r.train.get("cost_per_hour_usd")), 0)
            ax.set_xlabel(f"training cost (USD at ${per_hour:g}/hour; prompting = 0)")
            ax.set_ylabel(f"test {name} (%)")
            ax.set_title(f"{folder.name}: {name} vs training cost")
            ax.legend(fontsize=6, ncol=2)
        paths[folder] = _plot(assets / f"pareto_{_file_name(folder)}.png", draw)
    return paths


def _series(r: Record) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train = [(e["step"], e["loss"]) for e in r.train.get("loss_log") or []
             if isinstance(e, dict) and isinstance(e.get("loss"), (int, float)) and "step" in e]
    val = [(e["step"], e["eval_loss"]) for e in (r.data.get("validation") or {}).get("history") or []
           if isinstance(e, dict) and isinstance(e.get("eval_loss"), (int, float))]
    return train, val


def plot_loss_curves(records: list[Record], assets: Path) -> list[Path]:
    """One PNG per study folder with any logged loss: assets/loss_<folder path>.png."""
    studies = defaultdict(list)
    for r in records:
        if r.mode == "finetune" and any(_series(r)):
            studies[r.path.parent.parent].append(r)
    paths = []
    for folder, rs in sorted(studies.items()):
        rs = sorted(rs, key=lambda r: r.path.parent.name)

        def draw(ax, rs=rs, folder=folder):
            for i, r in enumerate(rs):
                train, val = _series(r)
                colour = f"C{i % 10}"
                if train:
                    ax.plot(*zip(*train), color=colour, label=f"{r.path.parent.name} train")
                if val:
                    ax.plot(*zip(*val), color=colour, ls="--", marker="o", ms=3, label=f"{r.path.parent.name} validation")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel("loss")
            ax.set_title(f"{folder.name}: training and validation loss")
            ax.legend(fontsize=6, ncol=2)
        paths.append(_plot(assets / f"loss_{_file_name(folder)}.png", draw))
    return paths
