"""Uncertainty of a test-set figure: bootstrap intervals and paired bootstrap tests over examples.

Every metric the hub reports is a mean of per-example scores (accuracy: 1/0 per example; ROUGE:
the F-measure of each prediction, best reference counting), so resampling the examples of one
`predictions.jsonl` with replacement gives its sampling distribution. Two runs evaluated on the
same test examples are compared *paired*: the same resampled examples for both, so the spread of
the difference excludes how hard the examples are (Koehn 2004, "Statistical significance tests
for machine translation evaluation"). Intervals are percentile intervals from scipy; seeded, so the
same files give the same interval.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import HubError

RESAMPLES = 1000
CONFIDENCE = 0.95


def read_predictions(path: str | Path) -> list[dict]:
    """The rows of a predictions.jsonl; a bad line is a one-line error naming file and line."""
    from ..data import read_numbered

    rows = read_numbered(path)
    for n, row in rows:
        missing = [k for k in ("id", "prediction", "reference") if k not in row]
        if missing:
            raise HubError(f"{path}:{n}: a prediction row needs 'id', 'prediction' and 'reference'; "
                           f"missing {', '.join(missing)}")
    return [row for _, row in rows]


def example_scores(rows: list[dict], kind: str) -> dict[str, np.ndarray]:
    """Per-example scores in percent whose means are the run's metrics: `accuracy` for
    classification (the matched `label` against `reference`), ROUGE-1/2/L/Lsum for generation."""
    if kind == "classification":
        hits = [float(r.get("label", r["prediction"]) == r["reference"]) for r in rows]
        return {"accuracy": 100 * np.asarray(hits)}
    from ..metrics import rouge_per_example

    scores = rouge_per_example([r["reference"] for r in rows], [r["prediction"] for r in rows])
    return {k: np.asarray(v) for k, v in scores.items()}


def bootstrap_interval(scores: np.ndarray, seed: int = 0, resamples: int = RESAMPLES,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile interval of the mean of `scores` over `resamples` bootstrap resamples."""
    from scipy.stats import bootstrap

    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2 or np.all(scores == scores[0]):
        return float(scores.mean()), float(scores.mean())  # no spread to resample
    res = bootstrap((scores,), np.mean, n_resamples=resamples, confidence_level=confidence,
                    method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def paired_bootstrap_p(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> float:
    """Two-sided p-value that mean(a) and mean(b) differ, a[i] and b[i] scoring the same example:
    twice the share of resamples whose mean difference falls on the other side of zero."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or not len(a):
        raise HubError("a paired test needs scores of the same examples, in the same order")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = min((means <= 0).mean(), (means >= 0).mean())
    return float(min(1.0, 2 * tail))


def paired(rows_a: list[dict], rows_b: list[dict]) -> tuple[list[dict], list[dict]] | None:
    """The two runs' rows on their shared example ids, in one order; None when they share none."""
    by_id = {str(r["id"]): r for r in rows_b}
    shared = [r for r in rows_a if str(r["id"]) in by_id]
    if not shared:
        return None
    return shared, [by_id[str(r["id"])] for r in shared]
