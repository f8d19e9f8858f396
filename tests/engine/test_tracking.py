"""Tracking: --report_to refuses a tracker whose package is missing with one line; the report
draws each study's training and validation loss curves from its results files. (Trackers that run
for real: test_trackers_real.py.)"""
from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from llmhub import cli
from llmhub.study import report
from llmhub.study.records import load_records
from pngs import pixels_of, read_png


@pytest.mark.parametrize("tracker", ["tensorboard", "mlflow", "wandb"])
def test_missing_tracker_package_is_one_error_line(tiny_models, data_dir, tmp_path, capsys, monkeypatch, tracker):
    find_spec = importlib.util.find_spec  # the dev extra installs tensorboard and mlflow: hide the tracker
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else find_spec(name, *a))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--pretrained_ckpt", str(tiny_models["llama"]), "--data_dir", str(data_dir),
                  "--task", "summarization", "--report_to", tracker, "--output_dir", str(out)])
    assert e.value.code == 2 and not out.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: report_to '{tracker}' needs the package {tracker} (pip install {tracker}); "
        "allowed without extra packages: none")


def test_unknown_tracker(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--report_to", "neptune", "--output_dir", str(tmp_path / "x")])
    assert "unknown report_to 'neptune'; allowed: none, tensorboard, mlflow, wandb" in capsys.readouterr().err


def test_report_draws_loss_curves_of_a_real_sweep(tiny_models, data_dir, tmp_path):
    base = {"pretrained_ckpt": str(tiny_models["llama"]), "data_dir": str(data_dir), "method": "lora",
            "train_samples": 16, "test_samples": 2, "max_steps": 6, "batch_size": 4, "logging_steps": 1,
            "eval_steps": 2, "max_source_length": 96, "max_new_tokens": 4, "eval_batch_size": 4}
    spec = {"task": "summarization", "name": "r{lora_r}", "base": base, "grid": {"lora_r": [2, 4]},
            "study": {"kind": "ablation", "varied": ["lora_r"], "reference": "r2"}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(spec))
    root = tmp_path / "results" / "llama2" / "tiny"
    cli.main(["sweep", str(tmp_path / "grid.yaml"), "--output_root", str(root)])
    result = json.loads((root / "r2" / "results.json").read_text())
    assert [e["step"] for e in result["validation"]["history"]] == [2, 4, 6]
    assert len(result["train"]["loss_log"]) == 6
    assets = tmp_path / "assets"
    cli.main(["report", str(tmp_path / "results"), "--assets", str(assets)])
    image = read_png(assets / "loss_llama2_tiny.png")  # r2 and r4: a curve each, in C0 and C1
    assert pixels_of(image, "C0") > 200 and pixels_of(image, "C1") > 200 and pixels_of(image, "C2") == 0
    table = report.build(load_records(tmp_path / "results"))["sweeps"]
    assert "p vs r2 (rouge1)" in table and "(best)" in table
