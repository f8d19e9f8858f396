"""Results folder -> the READMEs' Markdown tables and PNG plots, never typed by hand.

`python -m llmhub report results --readme flan-t5/README.md` reads every results.json under
`results/` (a corrupt one is reported on stderr and skipped), prints the tables, writes plots under
`assets/` (loss curves of every study among them), and rewrites the text between
`<!-- BEGIN results:NAME -->` and `<!-- END results:NAME -->` in each README (everything outside
the markers stays byte-identical).

Tables (NAME): sample-efficiency, lora-ablation, prefix-ablation, baselines, cost, methods, sweeps.
Runs of studies their grid declared ablations (`study: {kind: ablation}`, read from sweep.json by
records.py) feed the ablation tables; the others feed sample efficiency, baselines and cost, so a
rank ablation never shows up as a sample-size point. Studies that vary `method` get the methods table
(quality with intervals beside what each method cost); studies of kind `models` get the models table
and scaling plot instead (llmhub/study/model_study.py: seeds pooled). The figures: llmhub/study/plots.py.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path

from ..errors import HubError
from . import compare, model_study
from .records import Record, load_records
from .select import (CLS_METRICS, GEN_METRICS, MODE_ORDER, REFERENCE, REFERENCE_LABEL, duration, fmt,
                     latest_finetunes, markdown, mean, method_studies, setting)

TABLES = ("sample-efficiency", "lora-ablation", "prefix-ablation", "baselines", "cost", "methods", "sweeps", "models")
LORA_KEYS = ("epochs", "lora_r", "lora_alpha", "lora_dropout")
PREFIX_KEYS = ("epochs", "num_virtual_tokens", "prefix_projection", "lora_dropout")
def _samples_label(r: Record) -> str:
    frac = r.flat.get("train_sample_fraction")
    if r.flat.get("train_samples") is None and isinstance(frac, (int, float)):
        return f"{r.examples} ({frac * 100:g}%)"
    return str(r.examples)


def sample_efficiency(records: list[Record], reference: bool = False) -> str:
    """Rows: train examples; columns: model + method; cells: accuracy (%), mean over repeats."""
    rs = [r for r in records if r.mode == "finetune" and r.kind == "classification" and not r.ablation
          and r.examples]
    if not rs:
        return ""
    cols = sorted({r.label for r in rs})
    cells, labels, tests = defaultdict(list), {}, set()
    for r in rs:
        cells[(r.examples, r.label)].append(r.metrics["accuracy"])
        labels.setdefault(r.examples, _samples_label(r))
        tests.add(r.metrics.get("n"))
    refs = list(REFERENCE) if reference else []
    counts = sorted({r.examples for r in rs} | ({n for v in REFERENCE.values() for n in v} if refs else set()))
    rows = []
    for n in counts:
        row = [labels.get(n, str(n))]
        for c in cols:
            vals = cells.get((n, c))
            row.append("-" if not vals else fmt(mean(vals)) + (f" (mean of {len(vals)})" if len(vals) > 1 else ""))
        row += [fmt(REFERENCE[m].get(n)) for m in refs]
        rows.append(row)
    headers = ["Training samples"] + cols + [f"{m} ({REFERENCE_LABEL})" for m in refs]
    note = f"Accuracy (%) on {', '.join(str(t) for t in sorted(tests, key=str))} test posts."
    return markdown(headers, rows) + "\n\n" + note


def _ablation(records: list[Record], methods: tuple, keys: tuple) -> str:
    out = []
    groups = defaultdict(list)
    for r in records:
        if r.mode == "finetune" and r.flat.get("method") in methods and r.varied & set(keys):
            groups[(r.model, r.task, r.kind)].append(r)
    for (model, task, kind), rs in sorted(groups.items()):
        extra = sorted(set().union(*(r.varied for r in rs)) - set(keys) - {"task"})
        cols = [k for k in keys if any(k in r.varied for r in rs) or k in ("epochs",)] + extra
        metrics = CLS_METRICS[:1] if kind == "classification" else GEN_METRICS[:3]
        rs = sorted(rs, key=lambda r: [_order(r.flat.get(k)) for k in cols])
        rows = [[setting(r.flat.get(k)) for k in cols] + [compare.cell(r, m) for m, _ in metrics] + [r.examples] for r in rs]
        headers, rows = _compared(rs, cols + [h for _, h in metrics] + ["Train examples"], rows, metrics[0])
        out.append(f"**{model}, {task}**\n\n" + markdown(headers, rows) + _note(rs))
    return "\n\n".join(out)


def _order(value) -> tuple:
    """Numbers sort as numbers (2 < 10), everything else as text after them."""
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, json.dumps(value))


def lora_ablation(records: list[Record]) -> str:
    return _ablation(records, ("lora", "qlora"), LORA_KEYS)


def prefix_ablation(records: list[Record]) -> str:
    return _ablation(records, ("prefix",), PREFIX_KEYS)


def baselines(records: list[Record]) -> str:
    """Zero-shot vs few-shot vs fine-tuned, one table per task, one row per model and mode."""
    rs = [r for r in records if r.mode != "finetune" and not r.ablation] + latest_finetunes(records)
    out = []
    for task in sorted({r.task for r in rs}):
        group = sorted((r for r in rs if r.task == task), key=lambda r: (r.model, MODE_ORDER.get(r.mode, 3), r.label))
        metrics = CLS_METRICS if group[0].kind == "classification" else GEN_METRICS
        rows = [[r.model, r.setup + r.precision_suffix,
                 r.examples if r.mode == "finetune" else "-", r.metrics.get("n")]
                + [compare.cell(r, m) for m, _ in metrics] for r in group]
        out.append(f"**{task}**\n\n" + markdown(["Model", "Method", "Train examples", "Test examples"]
                                                + [h for _, h in metrics], rows) + _note(group, selects=False))
    return "\n\n".join(out)


def cost(records: list[Record]) -> str:
    """Time and cost to train: wall time x the run's configured $/hour, with where it ran."""
    rs = sorted((r for r in records if r.mode == "finetune" and r.train and not r.ablation),
                key=lambda r: (r.model, r.task, r.examples or 0))
    if not rs:
        return ""
    rows = [[r.label, r.task, r.examples, setting(r.flat.get("epochs")), r.train.get("steps"),
             duration(r.train.get("seconds")), f"${r.train.get('cost_per_hour_usd') or 0:.3f}",
             f"${r.train.get('cost_usd') or 0:.4f}", fmt(r.train.get("peak_memory_mb"), 0), r.hardware] for r in rs]
    return (markdown(["Model", "Task", "Train examples", "Epochs", "Steps", "Training time", "$/hour",
                      "Training cost", "Peak memory (MB)", "Hardware"], rows)
            + "\n\nCost = measured training time x the $/hour in the run's config (`cost_per_hour`, default "
              "the AWS g5.2xlarge on-demand price); the hardware column says where the time was measured.")


def _studied(r: Record) -> list[str]:
    """The keys a run's study varied that the table can show: config leaves, and `mode` (zero-shot,
    few-shot, finetune) for studies that compare baselines with fine-tuning."""
    return sorted(r.varied | ({"mode"} & r.study_keys))


def _value(r: Record, key: str):
    return r.mode if key == "mode" else r.flat.get(key)


def sweeps(records: list[Record]) -> str:
    """Any study with varied keys (any grid a user writes): varied keys + main metrics."""
    groups = defaultdict(list)
    for r in records:
        if _studied(r):
            groups[r.path.parent.parent].append(r)
    out = []
    for folder, rs in sorted(groups.items()):
        cols = _studied(rs[0])
        metrics = ("accuracy", "f1_macro") if all(r.kind == "classification" for r in rs) else ("rouge1", "rouge2", "rougeL")
        rs = sorted(rs, key=lambda r: ([(0, MODE_ORDER.get(r.mode, 3), "") if k == "mode" else _order(r.flat.get(k))
                                        for k in cols], r.path.parent.name))
        rows = [[r.path.parent.name] + [setting(_value(r, k)) for k in cols] + [compare.cell(r, m) for m in metrics]
                for r in rs]
        headers, rows = _compared(rs, ["Run"] + cols + list(metrics), rows, (metrics[0], metrics[0]))
        out.append(f"**{folder.name}**\n\n" + markdown(headers, rows) + _note(rs))
    return "\n\n".join(out)


def _parameters(r: Record) -> str:
    """Trainable parameters, and their share of the model's: '1.23M (0.91 %)'."""
    n, total = r.train.get("trainable_params"), r.train.get("total_params")
    if not isinstance(n, int):
        return "-"
    share = f" ({100 * n / total:.3g} %)" if isinstance(total, int) and total else ""
    count = f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}K" if n >= 1e3 else str(n)
    return count + share


def methods(records: list[Record]) -> str:
    """Method comparisons: per run, test metrics with intervals, validation loss (what selects), the
    p-value against the reference, and what the method cost to train."""
    out = []
    for folder, rs in method_studies(records).items():
        metrics = CLS_METRICS[:2] if all(r.kind == "classification" for r in rs) else GEN_METRICS[:3]
        rows = [[r.path.parent.name, r.setup, r.examples or "-", _parameters(r)]
                + [compare.cell(r, m) for m, _ in metrics] for r in rs]
        headers, rows = _compared(rs, ["Run", "Method", "Train examples", "Trainable params"]
                                  + [h for _, h in metrics], rows, metrics[0])
        rows = [row + [duration(r.train.get("seconds")), fmt(r.train.get("tokens_per_second"), 0),
                       fmt(r.train.get("peak_memory_mb"), 0),
                       f"${r.train['cost_usd']:.4f}" if isinstance(r.train.get("cost_usd"), (int, float)) else "-"]
                for r, row in zip(rs, rows)]
        headers += ["Training time", "Tokens/s", "Peak memory (MB)", "Training cost"]
        per_hour = sorted({r.train.get("cost_per_hour_usd") for r in rs if r.train.get("cost_per_hour_usd")})
        where = sorted({r.hardware for r in rs}) + sorted({r.precision for r in rs})
        out.append(f"**{folder.name}** ({', '.join(where)})\n\n" + markdown(headers, rows)
                   + _note(rs) + f" Training time includes the validation evaluations; cost = training time x "
                   f"{', '.join(f'${h:g}' for h in per_hour) or 'the configured $'}/hour (`cost_per_hour`); tokens/s "
                   "counts real (unpadded) training tokens.")
    return "\n\n".join(out)


def _compared(rs: list[Record], headers: list[str], rows: list[list], metric: tuple) -> tuple[list[str], list[list]]:
    """Add what a comparison needs where the runs have it: validation loss with the best run marked
    (selection by validation, never by test) and the paired p-value against the study's reference."""
    if any(compare.validation_loss(r) is not None for r in rs):
        best = compare.best_by_validation(rs)
        headers = headers + ["Validation loss"]
        rows = [row + [fmt(compare.validation_loss(r), 4) + (" (best)" if r is best else "")] for r, row in zip(rs, rows)]
    if any(compare.scores(r) for r in rs) and len(rs) > 1:
        ref = compare.reference(rs)
        headers = headers + [f"p vs {ref.path.parent.name} ({metric[1]})"]
        rows = [row + [compare.p_value(r, ref, metric[0])] for r, row in zip(rs, rows)]
    return headers, rows


def _note(rs: list[Record], selects: bool = True) -> str:
    """The caption under a compared table, only where it has intervals or validation to explain."""
    if not any(compare.scores(r) or compare.validation_loss(r) is not None for r in rs):
        return ""
    return "\n\n" + compare.note(rs, selects)


BUILDERS = {"lora-ablation": lora_ablation, "prefix-ablation": prefix_ablation, "baselines": baselines,
            "cost": cost, "methods": methods, "sweeps": sweeps, "models": model_study.table}


MARKER = re.compile(r"(<!-- BEGIN results:([\w.-]+) -->)(.*?)(<!-- END results:\2 -->)", re.S)


def rewrite_markers(text: str, blocks: dict[str, str], warn=None, where: str = "") -> tuple[str, list[str]]:
    """Replace what lies between each known marker pair; unknown names and the rest stay as they are."""
    warn = warn or sys.stderr
    done = []

    def sub(m):
        name = m.group(2)
        if name not in blocks:
            print(f"warning: {where}: no table named '{name}'; known: {', '.join(TABLES)}", file=warn)
            return m.group(0)
        done.append(name)
        return f"{m.group(1)}\n{blocks[name].strip()}\n{m.group(4)}"
    return MARKER.sub(sub, text), done


def write_if_changed(path: Path, text: str) -> bool:
    """Atomic replace keeping the file's mode; bytes in and out, so line endings never change."""
    path = Path(path)
    data = text.encode("utf-8")
    if path.read_bytes() == data:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return True


def _shown(path: str | Path) -> str:
    """A path as the user would type it: relative to the cwd when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else str(p)
    except ValueError:
        return p.name


def apart(records: list[Record]) -> list[Record]:
    """Every record but those of models studies, which have their own table (seeds pooled)."""
    return [r for r in records if r.study.get("kind") != model_study.KIND]


def build(records: list[Record], reference: bool = False) -> dict[str, str]:
    rest = apart(records)
    tables = {"sample-efficiency": sample_efficiency(rest, reference)}
    tables.update({name: fn(records if name == "models" else rest) for name, fn in BUILDERS.items()})
    return tables


def _caption(records: list[Record], command: str) -> str:
    hardware = ", ".join(sorted({r.hardware for r in records})) or "none"
    prov = [r.data.get("provenance") or {} for r in records]
    commits = sorted({(p.get("git_commit") or "unknown")[:10] + (" (dirty)" if p.get("git_dirty") else "") for p in prov})
    return (f"<!-- generated from results files; edit the results, not this block -->\n"
            f"_Generated by `{command}` from {len(records)} results files; hardware: {hardware}; "
            f"code: {', '.join(commits)}._")


def readme_blocks(records: list[Record], root: Path, readme: Path, command: str, plots: dict,
                  reference: bool) -> dict[str, str]:
    """Tables for one README: sample efficiency and the models studies compare every model; the rest
    are the folder's own, the records under <results>/<README's folder>/ (all of them for a README
    inside <results>), so a model folder without results says so instead of showing another model's rows."""
    scope = root / readme.resolve().parent.name
    inside = root.resolve() in readme.resolve().parents
    own = [r for r in records if inside or scope in r.path.parents]
    every = ("sample-efficiency", "models")
    tables = {**build(own, reference), "sample-efficiency": sample_efficiency(apart(records), reference),
              "models": model_study.table(records)}
    blocks = {}
    for name, table in tables.items():
        used = (records if name == "sample-efficiency" else [r for r in records if r.study.get("kind") == model_study.KIND]
                ) if name in every else own
        body = table or f"_No results for this table under `{_shown(root if inside else scope)}` yet._"
        images = plots.get(name)  # one plot, or one per study folder (only this README's studies)
        if isinstance(images, dict):
            images = [path for folder, path in images.items() if any(r.path.parent.parent == folder for r in used)]
        for image in (images if isinstance(images, list) else [images] if images else []) if table else []:
            rel = os.path.relpath(image, readme.resolve().parent).replace(os.sep, "/")
            body += f"\n\n![{name}]({rel})"
        blocks[name] = _caption(used, command) + "\n\n" + body
    return blocks


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="results folder -> Markdown tables, PNG plots, README sections",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="folder searched recursively for results.json, e.g. results")
    p.add_argument("--readme", action="append", default=[],
                   help="README whose <!-- BEGIN/END results:NAME --> sections to rewrite (repeatable)")
    p.add_argument("--assets", default=None, help="folder for the PNG plots (default: assets/ beside the results folder)")
    p.add_argument("--reference", action="store_true",
                   help=f"add the original study's Table 1 numbers as labelled columns ({REFERENCE_LABEL})")


def main(args) -> None:
    root = Path(args.results)
    records = load_records(root)
    # default: assets/ beside the results folder (the checkout's, for `report results` run in it)
    assets = Path(args.assets) if args.assets else root.resolve().parent / "assets"
    command = shlex.join(["python", "-m", "llmhub", "report", _shown(root)] + ["--reference"] * args.reference)
    tables = build(records, args.reference)
    for name, table in tables.items():
        print(f"## {name}\n\n{table or '(no results for this table)'}\n")
    from . import plots as figures  # matplotlib only when drawing

    rest = apart(records)
    plots = {"sample-efficiency": figures.plot_sample_efficiency(rest, assets / "accuracy_vs_samples.png",
                                                                 args.reference),
             "baselines": figures.plot_rouge(rest, assets / "rouge_by_method.png"),
             "methods": figures.plot_pareto(rest, assets),
             "models": model_study.plot_scaling(records, assets)}
    drawn = [p for p in plots.values() if isinstance(p, Path)] + list(plots["methods"].values()) + list(
        plots["models"].values())
    for path in [*drawn, *figures.plot_loss_curves(records, assets)]:
        print(f"plot: {_shown(path)}")
    for readme in map(Path, args.readme):
        if not readme.is_file():
            raise HubError(f"README not found: {readme}")
        blocks = readme_blocks(records, root, readme, command, plots, args.reference)
        text, done = rewrite_markers(readme.read_bytes().decode("utf-8"), blocks, where=str(readme))
        changed = write_if_changed(readme, text)
        print(f"{_shown(readme)}: {', '.join(done) or 'no result markers'}{'' if changed else ' (unchanged)'}")
    print(f"{len(records)} results files under {_shown(root)}", file=sys.stderr)
