"""The report's comparisons: intervals from predictions.jsonl, paired p-values against the study's
reference run, "best" chosen by validation loss (never by test), re-evaluations not counted as runs."""
from __future__ import annotations

import json
import random
from pathlib import Path

from llmhub.study import compare, plots, report
from test_report import declare, fake

LABELS = ["a", "b", "c"]


def classified(root: Path, rel: str, hits: list[bool], val_loss: float | None, ids=None) -> Path:
    """A run whose predictions.jsonl holds `hits` (right/wrong per example) and whose results.json
    says the matching accuracy."""
    ids = ids or [str(i) for i in range(len(hits))]
    rows = [{"id": i, "reference": LABELS[k % 3], "prediction": LABELS[k % 3] if h else LABELS[(k + 1) % 3],
             "label": LABELS[k % 3] if h else LABELS[(k + 1) % 3]} for k, (i, h) in enumerate(zip(ids, hits))]
    acc = 100 * sum(hits) / len(hits)
    path = fake(root, rel, {"accuracy": acc, "f1_macro": acc, "unmatched_rate": 0.0}, pretrained_ckpt="m",
                task="classification", method=rel.rsplit("/", 1)[1].split("_")[0])
    (path.parent / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if val_loss is not None:
        data = json.loads(path.read_text())
        data["validation"] = {"loss": val_loss, "examples": 20, "history": []}
        path.write_text(json.dumps(data))
    return path


def study(tmp_path: Path) -> Path:
    rng = random.Random(0)
    root = tmp_path / "results"
    base = [rng.random() < 0.6 for _ in range(200)]
    classified(root, "m/methods/lora_run", base, 1.20)
    classified(root, "m/methods/full_run", [h or rng.random() < 0.5 for h in base], 1.10)  # clearly better
    classified(root, "m/methods/ia3_run", [rng.random() < 0.62 for _ in range(200)], 0.90)  # lowest validation loss
    classified(root, "m/methods/prompt_run", base[:100], None, ids=[f"x{i}" for i in range(100)])  # other examples
    declare(root, "m/methods", "comparison", ["method"])
    sweep = root / "m/methods/sweep.json"
    sweep.write_text(json.dumps({"study": {"kind": "comparison", "varied": ["method"], "reference": "lora_run"}}))
    return root


def test_intervals_p_values_and_selection_by_validation(tmp_path):
    root = study(tmp_path)
    records = report.load_records(root)
    table = report.build(records)["sweeps"]
    assert table == report.build(report.load_records(root))["sweeps"]  # seeded: the same text every time
    lines = {ln.split(" | ")[0][2:]: ln.split(" | ") for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| Run")}
    header = next(ln for ln in table.splitlines() if ln.startswith("| Run"))
    assert header.endswith("| Validation loss | p vs lora_run (accuracy) |")
    for name, cells in lines.items():
        value, low, high = (float(x) for x in cells[2].replace("[", "").replace("]", "").replace(",", "").split())
        assert low <= value <= high and low < high, name
    assert lines["lora_run"][-1] == "ref |"
    assert lines["full_run"][-1] == "< 0.001 |"  # paired: same examples, strictly more right
    assert lines["prompt_run"][-1] == "- |"  # other test examples: no paired test
    assert float(lines["ia3_run"][-1][:-2]) > 0.001
    # best by validation loss (ia3_run), not by test accuracy (full_run is higher on test)
    assert lines["ia3_run"][-2] == "0.9000 (best)" and "(best)" not in lines["full_run"][-2]
    assert lines["prompt_run"][-2] == "-"
    assert "Best (marked) = lowest validation loss" in table and "1,000 resamples, seed 0" in table


def test_interval_is_deterministic_and_holds_the_estimate(tmp_path):
    root = study(tmp_path)
    r = next(r for r in report.load_records(root) if r.path.parent.name == "full_run")
    a, b = compare.cell(r, "accuracy"), compare.cell(r, "accuracy")
    assert a == b and a.startswith(f"{r.metrics['accuracy']:.2f} [")
    assert compare.cell(r, "f1_macro") == f"{r.metrics['f1_macro']:.2f}"  # no per-example decomposition


def test_re_evaluations_are_not_study_rows(tmp_path, capsys):
    root = study(tmp_path)
    run = root / "m/methods/lora_run"
    (run / "config.yaml").write_text("output_dir: x\n")
    fake(run, "eval/test_samples-10", {"accuracy": 99.0, "f1_macro": 99.0, "unmatched_rate": 0.0},
         pretrained_ckpt="m", task="classification")
    records = report.load_records(root)
    assert len(records) == 4 and not any("eval" in r.path.parts for r in records)
    assert "99.00" not in report.build(records)["sweeps"]


def test_no_validation_no_best(tmp_path):
    root = tmp_path / "results"
    classified(root, "m/s/lora_a", [True, False] * 20, None)
    classified(root, "m/s/lora_b", [True, True, False] * 10, None)
    declare(root, "m/s", "comparison", ["method"])
    table = report.build(report.load_records(root))["sweeps"]
    assert "Validation loss" not in table and "none is marked best" in table
    assert "p vs lora_a (accuracy)" in table  # no reference named: the first row


def test_baselines_and_fine_tuning_are_compared_in_their_study(tmp_path):
    root = tmp_path / "results"
    rng = random.Random(1)
    for mode, p in (("zero-shot", 0.3), ("few-shot", 0.5), ("finetune", 0.8)):
        path = classified(root, f"m/cmp/{mode}", [rng.random() < p for _ in range(100)], None)
        data = json.loads(path.read_text())
        data["mode"] = mode
        path.write_text(json.dumps(data))
    (root / "m/cmp/sweep.json").write_text(json.dumps({"study": {"kind": "comparison", "varied": ["mode", "action"],
                                                                 "reference": "zero-shot"}}))
    table = report.build(report.load_records(root))["sweeps"]
    rows = [ln.split(" | ") for ln in table.splitlines() if ln.startswith("| ") and not ln.startswith("| Run")]
    assert [r[1] for r in rows] == ["zero-shot", "few-shot", "finetune"]
    assert rows[0][-1] == "ref |" and rows[2][-1] == "< 0.001 |"


def test_method_table_and_pareto_plot(tmp_path):
    root = study(tmp_path)
    fake(root, "other/s/lora", {"accuracy": 50.0, "f1_macro": 50.0, "unmatched_rate": 0.0}, pretrained_ckpt="m",
         task="classification")  # not a method study: no row, no plot
    records = report.load_records(root)
    table = report.build(records)["methods"]
    header, _, *rows = [ln for ln in table.splitlines() if ln.startswith("|")]
    assert header.startswith("| Run | Method | Train examples | Trainable params | Accuracy | Macro F1 | Validation loss |")
    assert header.endswith("| Training time | Tokens/s | Peak memory (MB) | Training cost |")
    cells = {r.split(" | ")[0][2:]: r.split(" | ") for r in rows}
    assert list(cells) == ["lora_run", "prompt_run", "ia3_run", "full_run"]  # methods in a fixed order
    assert cells["full_run"][1:4] == ["full FT", "266", "10 (10 %)"] and cells["lora_run"][7] == "ref"
    assert cells["full_run"][-4:] == ["90 s", "11", "512", "$0.0303 |"]
    assert "other" not in table and "1.212/hour" in table
    drawn = plots.plot_pareto(records, tmp_path / "assets")
    assert list(drawn) == [root / "m" / "methods"] and drawn[root / "m" / "methods"].read_bytes()[:4] == b"\x89PNG"
    blocks = report.readme_blocks(records, root, tmp_path / "m" / "README.md", "cmd", {"methods": drawn}, False)
    assert "![methods](../assets/pareto_m_methods.png)" in blocks["methods"]
    other = report.readme_blocks(records, root, tmp_path / "other" / "README.md", "cmd", {"methods": drawn}, False)
    assert "pareto" not in other["methods"] and "_No results for this table" in other["methods"]
