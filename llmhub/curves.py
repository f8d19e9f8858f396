"""Loss curves of every study, drawn from its results files into assets/: training loss (solid)
and validation loss (dashed, where the run evaluated one) against the optimizer step, one colour
per run. The numbers are the ones results.json holds (`train.loss_log`, `validation.history`)."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from .records import Record


def _series(r: Record) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    train = [(e["step"], e["loss"]) for e in r.train.get("loss_log") or []
             if isinstance(e, dict) and isinstance(e.get("loss"), (int, float)) and "step" in e]
    val = [(e["step"], e["eval_loss"]) for e in (r.data.get("validation") or {}).get("history") or []
           if isinstance(e, dict) and isinstance(e.get("eval_loss"), (int, float))]
    return train, val


def plot_loss_curves(records: list[Record], assets: Path) -> list[Path]:
    """One PNG per study folder with any logged loss: assets/loss_<folder path>.png."""
    from .report import _plot  # the report's figure settings (size, grid, no version stamp)

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
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(folder.parts[-2:]))
        paths.append(_plot(assets / f"loss_{name}.png", draw))
    return paths
