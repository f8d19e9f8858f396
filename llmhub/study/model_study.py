"""The "which model?" table and scaling plot: studies whose grid declared `study: {kind: models}`.

One row per (model, setup), its seeds pooled:
- ROUGE-1/2/L (summarization) or accuracy and macro F1 (classification): the mean over seeds,
  `± spread` (the seeds' standard deviation) where there are several; the first is the primary metric.
- 95 % interval: bootstrap over test examples of each example's score averaged over the seeds
  (llmhub/study/stats.py, seed 0), so it counts the test set's sampling error, not the seeds'.
- p: paired bootstrap p-value of those per-example averages against the reference row's (the grid's
  `reference` run's model and setup), on the examples both scored.
- Learning rate: the value the search chose (llmhub/study/grid.py), with every screened value's validation
  loss, read from the study's screen/ runs, then the second rung's full-length validation losses where it
  ran (`finalists`: the screen/*_full runs, and the row's run of the same seed for the value it trained
  with), and the value that is now lowest when it differs from the row's (found after the row trained:
  `extend` or `finalists` added and run by `sweep --screen_only`).
- Words (summarization): the generated summaries' mean length in words over the seeds, the references'
  in the note below the table: a summary much shorter than its reference caps its recall, and so ROUGE.
- Training time, tokens/s, cost: means over seeds; peak memory: the largest.
Beside it, the original study's figures, labelled: its SAMSum table (GPU, 7B-class models, the full
train split), or its 20 Newsgroups accuracies at the study's number of training posts.
"""
from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..models import REGISTRY
from . import compare, stats
from .records import METHOD_LABEL, Record
from .select import (CLS_METRICS, GEN_METRICS, REFERENCE as CLS_REFERENCE, REFERENCE_LABEL as CLS_REFERENCE_LABEL,
                     duration, fmt, markdown)

KIND = "models"
METRICS = {"generation": GEN_METRICS[:3], "classification": CLS_METRICS[:2]}  # the first is the primary metric
TEST = {"generation": ("test dialogues", "SAMSum test"), "classification": ("test posts", "20 Newsgroups test")}
# The original study's SAMSum results (ROUGE-1, ROUGE-2 in %): QLoRA (LoRA for Flan-T5-Large, full
# fine-tuning for Flan-T5-Base) on the full SAMSum train split, on an AWS g5.2xlarge (one A10G 24 GB).
REFERENCE_LABEL = "original study: full SAMSum train split, one A10G GPU (g5.2xlarge)"
REFERENCE = [("Flan-T5-Base", "250M", "full fine-tuning", 47.23, 21.01),
             ("Flan-T5-Large", "780M", "LoRA", 49.21, 23.39),
             ("RedPajama-3B", "3B", "QLoRA", 47.75, 23.53),
             ("RedPajama-7B", "7B", "QLoRA", 49.96, 25.94),
             ("Falcon-7B", "7B", "QLoRA", 52.18, 27.84),
             ("Llama-2-7B", "7B", "QLoRA", 51.71, 26.86),
             ("Llama-2-13B", "13B", "QLoRA", 52.97, 28.32),
             ("Llama-2-7B", "7B", "zero-shot", 30.06, 8.61),
             ("Llama-2-7B", "7B", "few-shot", 35.57, 14.23)]
SETUP_ORDER = ("zero-shot", "few-shot", *METHOD_LABEL.values())


class Row:
    """The runs of one (model, setup) in a models study, seeds pooled."""

    def __init__(self, runs: list[Record]):
        self.runs = sorted(runs, key=lambda r: r.flat.get("seed") or 0)
        first = self.runs[0]
        self.model, self.setup, self.folder = first.model, first.setup, first.path.parent.parent
        self.metrics = METRICS[first.kind]
        self.seeds = [r.flat.get("seed") for r in self.runs] if first.mode == "finetune" else []

    def mean(self, metric: str) -> float:
        return statistics.fmean(r.metrics[metric] for r in self.runs)

    def spread(self, metric: str) -> float | None:
        values = [r.metrics[metric] for r in self.runs]
        return statistics.stdev(values) if len(values) > 1 else None

    def example_scores(self, metric: str) -> tuple[list[str], np.ndarray] | None:
        """Example ids and each example's score averaged over the seeds (runs on the same examples)."""
        found = [compare.scores(r) for r in self.runs]
        if not all(found) or any(sorted(ids) != sorted(found[0][0]) for ids, _ in found):
            return None
        order = found[0][0]
        positions = [{i: k for k, i in enumerate(ids)} for ids, _ in found]
        stacked = [s[metric][[where[x] for x in order]] for where, (_, s) in zip(positions, found)]
        return order, np.mean(stacked, axis=0)

    def interval(self, metric: str) -> tuple[float, float] | None:
        found = self.example_scores(metric)
        return stats.bootstrap_interval(found[1], seed=compare.SEED) if found else None

    def words(self) -> tuple[float, float] | None:
        """Mean length in words of the generated answers over the seeds, and of their references
        (predictions.jsonl): a summary much shorter than its reference caps its recall, and so its ROUGE F1."""
        answers, references = [], []
        for r in self.runs:
            rows = compare.predictions(r)
            if rows is None:
                return None
            answers += [len(row["prediction"].split()) for row in rows]
            references += [len(str(row["reference"]).split()) for row in rows]
        return (statistics.fmean(answers), statistics.fmean(references)) if answers else None

    def train(self, key: str, reduce=statistics.fmean):
        values = [r.train.get(key) for r in self.runs if isinstance(r.train.get(key), (int, float))]
        return reduce(values) if values else None

    @property
    def total_params(self) -> float | None:
        """Parameters counted by training, else the registry's figure for a short name (baselines)."""
        counted = self.train("total_params", max)
        if counted:
            return counted
        spec = REGISTRY.get(self.model)
        scale = {"M": 1e6, "B": 1e9}
        return float(spec.params[:-1]) * scale[spec.params[-1]] if spec and spec.params[-1:] in scale else None


def p_value(row: Row, ref: Row, metric: str) -> str:
    if row is ref:
        return "ref"
    a, b = row.example_scores(metric), ref.example_scores(metric)
    if not a or not b or sorted(a[0]) != sorted(b[0]):
        return "-"
    position = {i: k for k, i in enumerate(a[0])}
    p = stats.paired_bootstrap_p(a[1][[position[i] for i in b[0]]], b[1], seed=compare.SEED)
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def studies(records: list[Record]) -> dict[Path, list[Row]]:
    """The rows of every models study, by sweep folder: models in order of size, then setups."""
    groups = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.study.get("kind") == KIND:
            groups[r.path.parent.parent][(r.model, r.setup)].append(r)
    out = {}
    for folder, by_setup in sorted(groups.items()):
        rows = [Row(runs) for runs in by_setup.values()]
        size = {row.model: row.total_params for row in rows if row.total_params}
        out[folder] = sorted(rows, key=lambda row: (size.get(row.model, 0), row.model, SETUP_ORDER.index(row.setup)
                                                    if row.setup in SETUP_ORDER else len(SETUP_ORDER)))
    return out


def reference_row(rows: list[Row]) -> Row | None:
    named = next((r.study.get("reference") for row in rows for r in row.runs if r.study.get("reference")), None)
    return next((row for row in rows if any(r.path.parent.name == named for r in row.runs)), rows[0] if rows else None)


def screened(folder: Path) -> dict[tuple[str, str, str], list[tuple[float, float, int]]]:
    """(model, method, "screen" or "full") -> [(learning rate, validation loss, seed)] of the study's
    screening runs and second-rung full-length runs (folders ending in _full)."""
    out = defaultdict(list)
    for path in sorted((folder / "screen").glob("*/results.json")):
        data = json.loads(path.read_text())
        loss = (data.get("validation") or {}).get("loss")
        cfg = data["config"]
        if isinstance(loss, (int, float)):
            stage = "full" if path.parent.name.endswith("_full") else "screen"
            out[(Path(cfg["model"]["pretrained_ckpt"]).name, cfg["method"]["method"], stage)].append(
                (cfg["train"]["learning_rate"], loss, cfg["train"]["seed"]))
    return {k: sorted(v) for k, v in out.items()}


def _losses(pairs) -> str:
    return ", ".join(f"{lr:g} ({loss:.3f})" for lr, loss in pairs)


def _learning_rate(row: Row, screens: dict) -> str:
    if row.runs[0].mode != "finetune":
        return "-"
    chosen = row.runs[0].flat.get("learning_rate")
    tried = screens.get((row.model, row.runs[0].flat.get("method"), "screen"))
    if not tried:
        return f"{chosen:g}"
    cell = f"**{chosen:g}** of " + _losses((lr, loss) for lr, loss, _ in tried)
    full = screens.get((row.model, row.runs[0].flat.get("method"), "full"), [])
    seed = full[0][2] if full else None
    own = [(r.flat.get("learning_rate"), r.data["validation"]["loss"]) for r in row.runs
           if r.flat.get("seed") == seed and (r.data.get("validation") or {}).get("loss") is not None]
    if full:  # the second rung: the full-length runs, and this row's run of their seed (once per value:
        # a lead retrained with a finalist's value repeats that value's full-length run, which counts, as
        # in the sweep)
        lengths = sorted({**dict(own), **{lr: loss for lr, loss, _ in full}}.items())
        cell += f"; full length (seed {seed}): " + _losses(lengths)
        best = min(lengths, key=lambda t: t[1])[0]
        return cell if best == chosen else cell + f"; lowest at full length: {best:g}"
    best = min(tried, key=lambda t: t[1])[0]
    return cell if best == chosen else cell + f"; lowest since: {best:g} (screened after this row trained)"


def _count(n) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K"


def _reference(kinds: set[str], examples: set) -> list[str]:
    """The original study's figures for the studies shown, labelled as such."""
    out = []
    if "generation" in kinds:
        ref_rows = [[m, p, s, f"{r1:.2f}", f"{r2:.2f}"] for m, p, s, r1, r2 in REFERENCE]
        out.append(f"For comparison, {REFERENCE_LABEL} (reference figures from the original study, not "
                   "measured here):\n\n" + markdown(["Model", "Params", "Setup", "ROUGE-1", "ROUGE-2"], ref_rows))
    counts = sorted(n for n in examples if any(n in v for v in CLS_REFERENCE.values()))
    if "classification" in kinds and counts:
        ref_rows = [[model, *(f"{v[n]:.2f}" for n in counts)] for model, v in CLS_REFERENCE.items()]
        out.append(f"For comparison, the original study's 20 Newsgroups accuracy ({CLS_REFERENCE_LABEL}; reference "
                   "figures, not measured here):\n\n" + markdown(["Model", *(f"{n} posts" for n in counts)], ref_rows))
    return out


def table(records: list[Record]) -> str:
    out, kinds, examples = [], set(), set()
    for folder, rows in studies(records).items():
        ref = reference_row(rows)
        screens = screened(folder)
        kind = ref.runs[0].kind
        (primary, primary_name), *_ = metrics = ref.metrics
        kinds.add(kind)
        examples |= {r.examples for row in rows for r in row.runs if r.examples}
        body = []
        for row in rows:
            cells = []
            for metric, _ in metrics:
                spread = row.spread(metric)
                cells.append(f"{row.mean(metric):.2f}" + (f" ± {spread:.2f}" if spread is not None else ""))
            bounds = row.interval(primary)
            cost = row.train("cost_usd")
            if kind == "generation":
                lengths = row.words()
                cells.append(f"{lengths[0]:.1f}" if lengths else "-")
            body.append([row.model, _count(row.total_params), row.setup, len(row.seeds) or "-", cells[0],
                         f"[{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else "-", *cells[1:],
                         p_value(row, ref, primary), _count(row.train("trainable_params")),
                         _learning_rate(row, screens), duration(row.train("seconds")),
                         fmt(row.train("tokens_per_second"), 0), fmt(row.train("peak_memory_mb", max), 0),
                         f"${cost:.4f}" if cost is not None else "-"])
        words = ["Words"] if kind == "generation" else []
        references = (ref.words() or (None, None))[1] if words else None
        headers = ["Model", "Params", "Setup", "Seeds", primary_name, "95 % interval", *(n for _, n in metrics[1:]),
                   *words, f"p vs {ref.model} {ref.setup} ({primary_name})", "Trainable",
                   "Learning rate (screened: val. loss)", "Training time", "Tokens/s", "Peak memory (MB)",
                   "Training cost"]
        hardware = sorted({r.hardware for row in rows for r in row.runs})
        precision = sorted({r.precision for row in rows for r in row.runs})
        out.append(f"**{folder.name}** ({', '.join(hardware + precision)})\n\n" + markdown(headers, body) + (
            f"\n\n{primary_name} and the rest: mean over seeds ± their standard deviation; 95 % interval: bootstrap "
            f"over the {rows[0].runs[0].metrics.get('n', '?')} {TEST[kind][0]} of each example's {primary_name} "
            f"averaged over the seeds ({stats.RESAMPLES:,} resamples, seed {compare.SEED}); p: paired bootstrap on "
            "the same averages. A learning rate in bold was chosen by validation loss after a short screen "
            "(the grid's `search`); one without a screen is the grid's own. Training time includes the validation "
            "evaluations; cost = training time x the configured $/hour; tokens/s counts real (unpadded) "
            "training tokens." + (f" Words: the generated summaries' mean length in words (the references': "
                                  f"{references:.1f})." if references is not None else "")))
    return "\n\n".join(out + (_reference(kinds, examples) if out else []))


def plot_scaling(records: list[Record], assets: Path) -> dict[Path, Path]:
    """Per models study: the primary metric (ROUGE-1, accuracy) against parameters and against training
    cost, 95 % intervals drawn."""
    from .plots import _file_name, _plot  # matplotlib only when drawing

    out = {}
    for folder, rows in studies(records).items():
        size = {row.model: row.total_params for row in rows if row.total_params}

        def draw(axes, rows=rows, size=size):
            left, right = axes
            for setup in dict.fromkeys(row.setup for row in rows):
                mine = [row for row in rows if row.setup == setup and row.model in size]
                if mine:
                    _points(left, [size[row.model] for row in mine], mine, setup)
                costed = [row for row in mine if row.train("cost_usd") is not None]
                if costed:
                    _points(right, [row.train("cost_usd") for row in costed], costed, setup)
            left.set(xscale="log", xlabel="parameters", ylabel=f"{rows[0].metrics[0][1]} ({TEST[rows[0].runs[0].kind][1]})")
            right.set(xscale="log", xlabel="training cost (USD at the configured $/hour)")
            left.legend(fontsize=8)

        out[folder] = _plot(assets / f"scaling_{_file_name(folder)}.png", draw, columns=2)
    return out


def _points(ax, xs: list[float], rows: list[Row], label: str) -> None:
    metric = rows[0].metrics[0][0]
    ys = [row.mean(metric) for row in rows]
    bounds = [row.interval(metric) or (y, y) for row, y in zip(rows, ys)]
    err = [[max(0.0, y - lo) for y, (lo, _) in zip(ys, bounds)], [max(0.0, hi - y) for y, (_, hi) in zip(ys, bounds)]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
    for x, y, row in zip(xs, ys, rows):
        ax.annotate(row.model, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
