"""What the report says about a comparison: intervals, paired tests, and which run is "best".

- Each per-example metric (accuracy, ROUGE) is shown with its 95 % bootstrap interval over the run's
  test examples (llmhub/study/stats.py: 1,000 resamples, seed 0), read from the run's predictions.jsonl.
- Runs of one study evaluated on the same test examples get a paired bootstrap p-value against the
  study's reference run (the grid's `study: {reference: <run name>}`, else the study's first row).
- "Best" is chosen by validation loss, never by a test figure, and only among runs that have one.
"""
from __future__ import annotations

import sys

from ..errors import HubError
from . import stats
from .records import Record

SEED = 0  # the same files always give the same intervals and p-values
INTERVAL_NOTE = "[low, high]: 95 % bootstrap interval over test examples ({resamples:,} resamples, seed {seed})."
SELECTION_NOTE = (" Best (marked) = lowest validation loss, among runs that measured one; test figures are shown "
                  "for every run and never used to choose.")


def predictions(r: Record) -> list[dict] | None:
    """A run's predictions.jsonl rows, read once per record, or None without a readable one."""
    if not hasattr(r, "_predictions"):
        path = r.path.parent / "predictions.jsonl"
        r._predictions = None
        if path.is_file():
            try:
                r._predictions = stats.read_predictions(path)
            except HubError as e:
                print(f"warning: no intervals for {r.path.parent}: {e}", file=sys.stderr)
    return r._predictions


def scores(r: Record) -> tuple[list[str], dict] | None:
    """(example ids, per-example scores) of a run's predictions.jsonl, or None without one."""
    if not hasattr(r, "_scores"):
        rows = predictions(r)
        r._scores = ([str(row["id"]) for row in rows], stats.example_scores(rows, r.kind)) if rows is not None else None
    return r._scores


def interval(r: Record, metric: str) -> tuple[float, float] | None:
    """The metric's 95 % bootstrap interval, where per-example scores exist."""
    found = scores(r)
    if not found or metric not in found[1]:
        return None
    return stats.bootstrap_interval(found[1][metric], seed=SEED)


def cell(r: Record, metric: str) -> str:
    """The metric, with its interval where per-example scores exist: '45.12 [43.01, 47.30]'."""
    value = r.metrics.get(metric)
    if not isinstance(value, (int, float)):
        return "-"
    bounds = interval(r, metric)
    return f"{value:.2f}" if bounds is None else f"{value:.2f} [{bounds[0]:.2f}, {bounds[1]:.2f}]"


def reference(rs: list[Record]) -> Record | None:
    """The study's reference run: the one its grid named, else the first of `rs`."""
    named = next((r.study.get("reference") for r in rs if r.study.get("reference")), None)
    if named is not None:
        match = [r for r in rs if r.path.parent.name == named]
        if match:
            return match[0]
        print(f"warning: reference run '{named}' of {rs[0].path.parent.parent} not found; "
              "using the first run", file=sys.stderr)
    return rs[0] if rs else None


def p_value(r: Record, ref: Record, metric: str) -> str:
    """Paired bootstrap p-value of r vs ref on `metric`; '-' unless both scored the same examples."""
    if r is ref:
        return "ref"
    a, b = scores(r), scores(ref)
    if not a or not b or metric not in a[1] or len(set(a[0])) != len(a[0]) or sorted(a[0]) != sorted(b[0]):
        return "-"
    position = {i: k for k, i in enumerate(a[0])}
    mine = a[1][metric][[position[i] for i in b[0]]]  # r's scores in the reference's example order
    p = stats.paired_bootstrap_p(mine, b[1][metric], seed=SEED)
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def validation_loss(r: Record) -> float | None:
    loss = (r.data.get("validation") or {}).get("loss")
    return loss if isinstance(loss, (int, float)) else None


def best_by_validation(rs: list[Record]) -> Record | None:
    """The run with the lowest validation loss among those with one (ties: the first)."""
    scored = [r for r in rs if validation_loss(r) is not None]
    return min(scored, key=validation_loss) if scored else None


def note(rs: list[Record], selects: bool = True) -> str:
    """The caption line under a compared table (`selects`: the table marks a best run)."""
    text = INTERVAL_NOTE.format(resamples=stats.RESAMPLES, seed=SEED)
    if selects:
        text += SELECTION_NOTE if best_by_validation(rs) else " No run here measured a validation loss, so none is marked best."
    return text
