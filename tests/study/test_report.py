"""Report: tables from results files (fabricated ones for layout, a real tiny sweep's for the schema),
corrupt files skipped with a warning, README sections rewritten with the rest byte-identical."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmhub import cli
from llmhub.study import plots, report
from llmhub.config import RunConfig, apply_overrides
from pngs import pixels_of, read_png

ROOT = Path(__file__).resolve().parents[2]


def fake(root: Path, rel: str, metrics: dict, mode: str = "finetune", examples: int | None = 266,
         seconds: float = 90.0, **over) -> Path:
    """A schema-valid results.json with made-up numbers (only the table layout is under test)."""
    cfg = apply_overrides(RunConfig(), {"output_dir": str(root / rel), **over}).to_dict()
    train = None if mode != "finetune" else {
        "seconds": seconds, "steps": 10, "examples": examples, "real_tokens": 1000, "tokens_per_second": 11.0,
        "peak_memory_mb": 512.0, "cost_usd": seconds / 3600 * 1.212, "cost_per_hour_usd": 1.212,
        "trainable_params": 10, "total_params": 100}
    record = {"metrics": {**metrics, "n": 50}, "config": cfg, "mode": mode, "train": train,
              "eval": {"seconds": 1.0, "examples": 50},
              "provenance": {"git_commit": "abcdef1234567", "git_dirty": False, "packages": {},
                             "hardware": {"cpu_count": 2, "gpu": None}, "seed": 42}}
    path = root / rel / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def declare(root: Path, rel: str, kind: str, varied: list[str]) -> None:
    """The sweep.json a sweep writes beside its runs, with the grid's study declaration."""
    (root / rel).mkdir(parents=True, exist_ok=True)
    (root / rel / "sweep.json").write_text(json.dumps({"grid": f"{rel}.yaml", "study": {"kind": kind, "varied": varied}}))


def acc(a: float) -> dict:
    return {"accuracy": a, "f1_macro": a - 1, "unmatched_rate": 0.0}


def rouge(r1: float) -> dict:
    return {"rouge1": r1, "rouge2": r1 / 2, "rougeL": r1 - 5, "rougeLsum": r1 - 4}


@pytest.fixture()
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    for model, n, a in [("bert-base", 266, 40.0), ("bert-base", 533, 50.0), ("distilbert", 266, 35.0)]:
        fake(root, f"bert/ablate/{model}_n{n}", acc(a), examples=n, pretrained_ckpt=model, method="full",
             task="classification", train_samples=n)
    for r in (2, 4):
        for d in (0.1, 0.2):
            fake(root, f"flan-t5/lora/r{r}_d{d}", acc(60 + r + d), pretrained_ckpt="google/flan-t5-large",
                 task="classification", lora_r=r, lora_dropout=d)
    for t in (10, 50):
        fake(root, f"flan-t5/prefix/t{t}", rouge(40.0 + t / 10), pretrained_ckpt="google/flan-t5-large",
             method="prefix", task="summarization", num_virtual_tokens=t)
    for mode, r1 in (("zero-shot", 20.0), ("few-shot", 25.0)):
        fake(root, f"llama2/smollm2/{mode}", rouge(r1), mode=mode, pretrained_ckpt="smollm2-135m",
             task="summarization")
    fake(root, "llama2/smollm2/lora", rouge(35.0), examples=300, seconds=7300, pretrained_ckpt="smollm2-135m",
         task="summarization")
    declare(root, "bert/ablate", "sample_efficiency", ["pretrained_ckpt", "train_samples"])  # named badly on purpose
    declare(root, "flan-t5/lora", "ablation", ["lora_r", "lora_dropout"])
    declare(root, "flan-t5/prefix", "ablation", ["num_virtual_tokens"])
    declare(root, "llama2/smollm2", "comparison", ["mode", "action"])
    (root / "broken" / "a").mkdir(parents=True)
    (root / "broken" / "a" / "results.json").write_text("{not json")
    (root / "broken" / "b").mkdir(parents=True)
    (root / "broken" / "b" / "results.json").write_text('{"metrics": 1}')
    return root


def test_tables_from_fabricated_results(results, capsys):
    records = report.load_records(results)
    warnings = capsys.readouterr().err.splitlines()
    assert len(records) == 12 and len(warnings) == 2
    assert all(w.startswith("warning: skipping ") for w in warnings)
    assert "broken/a/results.json: unreadable" in warnings[0] and "no 'metrics' or 'config'" in warnings[1]
    tables = report.build(records)
    se = tables["sample-efficiency"].splitlines()
    assert se[0] == "| Training samples | bert-base + full FT | distilbert + full FT |"
    assert se[2] == "| 266 | 40.00 | 35.00 |" and se[3] == "| 533 | 50.00 | - |"
    assert "flan-t5" not in tables["sample-efficiency"]  # an ablation is not a sample-size point
    lora = tables["lora-ablation"]
    assert "**flan-t5-large, classification**" in lora
    assert "| epochs | lora_r | lora_dropout | Accuracy | Train examples |" in lora
    assert "| 5 | 4 | 0.2 | 64.20 | 266 |" in lora and lora.count("\n| 5 |") == 4
    assert "| epochs | num_virtual_tokens | ROUGE-1 | ROUGE-2 | ROUGE-L | Train examples |" in tables["prefix-ablation"]
    base = tables["baselines"]
    assert "**summarization**" in base and "**classification**" in base
    rows = [ln for ln in base.splitlines() if ln.startswith("| smollm2-135m")]
    assert [r.split(" | ")[1] for r in rows] == ["zero-shot", "few-shot", "LoRA"]
    assert rows[2] == "| smollm2-135m | LoRA | 300 | 50 | 35.00 | 17.50 | 30.00 | 31.00 |"
    cost = tables["cost"]
    assert "| smollm2-135m + LoRA | summarization | 300 | 5 | 10 | 2.03 h | $1.212 | $2.4577 | 512 | CPU x2 |" in cost
    assert "flan-t5-large" not in cost  # ablations stay out of the cost table
    ref = report.sample_efficiency(records, reference=True)
    assert "DistilBERT (original study, g5.2xlarge)" in ref and "| 10664 | - | - | 71.91 |" in ref


README = ("# Model\r\n\r\nIntro text that must survive.\n\n<!-- BEGIN results:sample-efficiency -->\nold table\n"
          "<!-- END results:sample-efficiency -->\n\nMiddle.\n<!-- BEGIN results:lora-ablation -->"
          "<!-- END results:lora-ablation -->\n<!-- BEGIN results:nonexistent -->\nkeep me\n"
          "<!-- END results:nonexistent -->\nTail without newline")


def _outside(text: str) -> list[str]:
    """The text outside every known marker pair."""
    return report.MARKER.sub(lambda m: m.group(1) + m.group(4) if m.group(2) != "nonexistent" else m.group(0),
                             text).split("<!-- END")


def test_cli_rewrites_only_between_markers(results, tmp_path):
    readme = tmp_path / "flan-t5" / "README.md"
    readme.parent.mkdir()
    readme.write_bytes(README.encode())
    os.chmod(readme, 0o644)
    plain = tmp_path / "bert" / "README.md"
    plain.parent.mkdir()
    plain.write_bytes(b"# no markers here\n")
    mtime = plain.stat().st_mtime_ns
    cmd = [sys.executable, "-m", "llmhub", "report", str(results), "--readme", str(readme), "--readme", str(plain),
           "--assets", str(tmp_path / "assets")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("warning: skipping") == 2 and "no table named 'nonexistent'" in proc.stderr
    assert "## sample-efficiency" in proc.stdout and "| 266 | 40.00 | 35.00 |" in proc.stdout
    text = readme.read_bytes().decode()
    assert _outside(text) == _outside(README)  # everything outside the markers is byte-identical
    assert "old table" not in text and "keep me" in text and "\r\n\r\nIntro" in text
    assert "Generated by `python -m llmhub report" in text and "hardware: CPU x2" in text
    assert "![sample-efficiency](../assets/accuracy_vs_samples.png)" in text
    assert "| 5 | 2 | 0.1 | 62.10 | 266 |" in text  # flan-t5's own ablation, scoped to results/flan-t5
    assert oct(readme.stat().st_mode & 0o777) == "0o644"
    assert plain.read_bytes() == b"# no markers here\n" and plain.stat().st_mtime_ns == mtime
    for png in ("accuracy_vs_samples.png", "rouge_by_method.png"):
        assert pixels_of(read_png(tmp_path / "assets" / png), "C0") > 100, png  # a whole PNG with a series drawn
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and readme.read_bytes().decode() == text  # a rerun changes nothing
    assert "(unchanged)" in again.stdout


def test_readme_tables_are_the_folders_own(results, tmp_path):
    """A model folder without results says so; it never shows another folder's rows."""
    records = report.load_records(results)
    blocks = {name: report.readme_blocks(records, results, tmp_path / name / "README.md", "cmd", {}, False)
              for name in ("llama2", "falcon")}
    assert "| smollm2-135m | LoRA | 300 |" in blocks["llama2"]["baselines"]
    assert "smollm2" not in blocks["falcon"]["baselines"] and "flan-t5" not in blocks["falcon"]["lora-ablation"]
    assert "_No results for this table under" in blocks["falcon"]["baselines"]
    assert "| 266 | 40.00 | 35.00 |" in blocks["falcon"]["sample-efficiency"]  # the cross-model comparison
    inside = report.readme_blocks(records, results, results / "README.md", "cmd", {}, False)
    assert "smollm2" in inside["baselines"] and "flan-t5-large" in inside["lora-ablation"]


@pytest.mark.parametrize("folder", ["flan-t5", "llama2", "falcon", "redpajama", "bert"])
def test_shipped_readme_copies_keep_their_text(results, tmp_path, folder):
    """On a copy of each shipped README: only the text between result markers changes."""
    src = ROOT / folder / "README.md"
    if not src.exists() or "<!-- BEGIN results:" not in src.read_text():
        pytest.skip(f"{folder}/README.md has no result markers yet")
    copy = tmp_path / folder / "README.md"
    copy.parent.mkdir()
    shutil.copy(src, copy)
    records = report.load_records(results)
    blocks = report.readme_blocks(records, results, copy, "python -m llmhub report results", {}, False)
    text, done = report.rewrite_markers(copy.read_text(), blocks)
    assert done and _outside(text) == _outside(src.read_text())


def test_study_is_read_from_sweep_json_not_guessed(results, capsys):
    (results / "flan-t5" / "lora" / "sweep.json").unlink()  # an undeclared study: its runs stand alone
    tables = report.build(report.load_records(results))
    assert "flan-t5-large" not in tables["lora-ablation"]
    (results / "bert" / "ablate" / "sweep.json").write_text(json.dumps({"study": {"kind": "ablation", "varied": ["train_samples"]}}))
    assert "bert-base" not in report.build(report.load_records(results))["sample-efficiency"]
    (results / "bert" / "ablate" / "sweep.json").write_text(json.dumps({"study": {"kind": "guess"}}))
    report.load_records(results)
    assert "unknown kind 'guess'; allowed: sample_efficiency, ablation, comparison" in capsys.readouterr().err


def test_tables_do_not_depend_on_file_times(results):
    before = report.build(report.load_records(results))
    dup = fake(results, "llama2/other/lora", rouge(30.0), examples=300, pretrained_ckpt="smollm2-135m",
               task="summarization")  # same model, method, task and size as llama2/smollm2/lora
    os.utime(dup, (1, 1))
    old = report.build(report.load_records(results))["baselines"]
    os.utime(dup, (4_000_000_000, 4_000_000_000))
    assert report.build(report.load_records(results))["baselines"] == old
    assert before["sample-efficiency"] == report.build(report.load_records(results))["sample-efficiency"]


def test_report_on_a_real_tiny_sweep(tiny_models, data_dir, tmp_path, capsys):
    base = {"pretrained_ckpt": str(tiny_models["bert"]), "data_dir": str(data_dir), "method": "full",
            "test_samples": 4, "epochs": 1, "max_steps": 1, "batch_size": 4, "max_source_length": 64,
            "eval_batch_size": 4, "save_steps": 100, "torch_dtype": "float32"}  # labels gain "(bf16)" under auto
    spec = {"task": "classification", "name": "n{train_samples}", "base": base, "grid": {"train_samples": [8, 16]},
            "study": {"kind": "sample_efficiency", "varied": ["train_samples"]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(spec))
    cli.main(["sweep", str(tmp_path / "sweep.yaml"), "--output_root", str(tmp_path / "results" / "bert" / "ablate")])
    assert json.loads((tmp_path / "results" / "bert" / "ablate" / "sweep.json").read_text())["study"] == spec["study"]
    records = report.load_records(tmp_path / "results")
    tables = report.build(records)
    name = tiny_models["bert"].name
    assert tables["sample-efficiency"].splitlines()[0] == f"| Training samples | {name} + full FT |"
    assert records[0].data["provenance"]["compute_dtype"] == "float32"
    assert [ln.split(" | ")[0] for ln in tables["sample-efficiency"].splitlines()[2:4]] == ["| 8", "| 16"]
    assert tables["cost"].count(f"| {name} + full FT | classification |") == 2
    assert [ln.split(" | ")[0] for ln in tables["sweeps"].splitlines()[4:6]] == ["| n8", "| n16"]  # 8 < 16
    assert plots.plot_sample_efficiency(records, tmp_path / "a.png").exists()
