"""Every (family x method x task) of the engine trains a few steps on a tiny model, saves, reloads
and evaluates; the reloaded model must reproduce the predictions made right after training."""
from __future__ import annotations

import json

import pytest

from llmhub.config import RunConfig, apply_overrides
from llmhub.experiment import evaluate_experiment, train_experiment

METHODS = ["lora", "qlora", "prefix", "prompt", "ia3", "full"]
TASKS = ["classification", "summarization", "dialogsum"]


def tiny_config(model_dir, data_dir, out, task, method, **extra) -> RunConfig:
    over = {"pretrained_ckpt": str(model_dir), "method": method, "task": task, "data_dir": str(data_dir),
            "output_dir": str(out), "train_samples": 16, "test_samples": 4, "epochs": 1, "max_steps": 3,
            "batch_size": 4, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8, "num_virtual_tokens": 4,
            "max_source_length": 96, "max_target_length": 24, "max_new_tokens": 8, "eval_batch_size": 4,
            "logging_steps": 1, **extra}
    return apply_overrides(RunConfig(), over)


@pytest.mark.parametrize("family", ["t5", "llama"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("task", TASKS)
def test_train_save_load_evaluate(tiny_models, data_dir, tmp_path, family, method, task):
    out = tmp_path / "exp"
    cfg = tiny_config(tiny_models[family], data_dir, out, task, method)
    record = train_experiment(cfg)
    assert record["train"]["steps"] == 3
    assert record["train"]["trainable_params"] > 0
    for name in ("config.yaml", "predictions.jsonl", "results.json", "model"):
        assert (out / name).exists(), name
    assert not (out / "checkpoints").exists()
    results = json.loads((out / "results.json").read_text())
    assert {"metrics", "config", "train", "provenance"} <= set(results)
    assert results["provenance"]["seed"] == 42
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    n_test = 3 if task == "dialogsum" else 4
    assert len(preds) == n_test and {"id", "reference", "prediction"} <= set(preds[0])
    if task == "dialogsum":
        assert all(isinstance(p["reference"], list) and len(p["reference"]) == 3 for p in preds)
    again = evaluate_experiment(out)
    preds2 = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in preds2] == [p["prediction"] for p in preds]
    assert again["metrics"] == results["metrics"]
