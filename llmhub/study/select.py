"""Which runs a table or a plot shows, and the metric columns it shows them with: shared by the
README tables (report.py) and the figures (plots.py), so both pick the same runs."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .records import METHOD_LABEL, Record

MODE_ORDER = {"zero-shot": 0, "few-shot": 1, "finetune": 2}
CLS_METRICS = (("accuracy", "Accuracy"), ("f1_macro", "Macro F1"), ("unmatched_rate", "Unmatched %"))
GEN_METRICS = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("rougeLsum", "ROUGE-Lsum"))
# The original study's Table 1 (20 Newsgroups accuracy, %), shown only with --reference and labelled.
REFERENCE_LABEL = "original study, g5.2xlarge"
REFERENCE = {"DistilBERT": {266: 36.24, 533: 46.65, 1066: 54.15, 2666: 67.07, 5332: 72.00, 10664: 71.91},
             "BERT": {266: 16.91, 533: 30.75, 1066: 53.73, 2666: 68.41, 5332: 72.46, 10664: 74.15},
             "Flan-T5-Large + LoRA": {266: 59.86, 533: 68.84, 1066: 73.38, 2666: 75.45, 5332: 75.43,
                                      10664: 72.31}}


def fmt(value, digits: int = 2) -> str:
    """A table cell: '-' for None, yes/no for booleans, `digits` decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def setting(value) -> str:
    """A config value as written in a grid: 5.0 -> '5', 0.1 -> '0.1', True -> 'yes'."""
    return fmt(value) if isinstance(value, bool) or value is None else f"{value:g}" if isinstance(value, float) else str(value)


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(":---:" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    """Seconds as a table shows them: '95 s', '12.3 min', '2.05 h'."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def latest_finetunes(records: list[Record]) -> list[Record]:
    """Per (model, method, task, precision): the non-ablation fine-tune with the most training examples; ties go
    to the larger test set, then to the later path, so the table never depends on file times."""
    def rank(r: Record) -> tuple:
        return r.examples or 0, (r.data.get("eval") or {}).get("examples") or 0, str(r.path)

    best: dict = {}
    for r in records:
        if r.mode != "finetune" or r.ablation:
            continue
        key = (r.model, r.flat.get("method"), r.task, r.precision)
        if key not in best or rank(r) > rank(best[key]):
            best[key] = r
    return list(best.values())


def method_studies(records: list[Record]) -> dict[Path, list[Record]]:
    """Studies that vary `method`, by sweep folder; prompting rows first, then methods in METHOD_LABEL
    order, then by training-set size."""
    order = {m: i for i, m in enumerate(METHOD_LABEL)}
    groups = defaultdict(list)
    for r in records:
        if "method" in r.study_keys:
            groups[r.path.parent.parent].append(r)
    return {folder: sorted(rs, key=lambda r: (MODE_ORDER.get(r.mode, 3), r.examples or 0,
                                              order.get(r.flat.get("method"), len(order)), r.path.parent.name))
            for folder, rs in sorted(groups.items())}
