"""The bert/ folder: encoder sequence classification, full fine-tuning by default and LoRA as an option,
with the same results files as every other experiment (the tiny "bert" fixture is a bare BertModel
folder, so a new classification head is initialised on top of it)."""
from __future__ import annotations

import json

import pytest

from llmhub.config import RunConfig, apply_overrides
from llmhub.errors import HubError
from llmhub.experiment import evaluate_experiment, train_experiment
from llmhub.recipes import defaults


def bert_config(model_dir, data_dir, out, **extra) -> RunConfig:
    over = {"pretrained_ckpt": str(model_dir), "data_dir": str(data_dir), "output_dir": str(out),
            "train_samples": 16, "test_samples": 8, "epochs": 1, "max_steps": 3, "batch_size": 8,
            "learning_rate": 1e-3, "max_source_length": 64, "eval_batch_size": 8, "logging_steps": 1, **extra}
    return apply_overrides(apply_overrides(RunConfig(), defaults("bert", "classification")), over)


def test_recipe_matches_the_seeds():
    cfg = apply_overrides(RunConfig(), defaults("bert", "classification"))
    assert (cfg.model.pretrained_ckpt, cfg.method.method, cfg.data.task, cfg.data.clean) == (
        "bert-base-uncased", "full", "classification", "strip")
    assert (cfg.train.learning_rate, cfg.train.epochs, cfg.train.batch_size) == (2e-5, 5, 32)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_train_save_load_evaluate(tiny_models, data_dir, tmp_path, method):
    out = tmp_path / "exp"
    record = train_experiment(bert_config(tiny_models["bert"], data_dir, out, method=method))
    assert record["train"]["steps"] == 3
    trainable, total = record["train"]["trainable_params"], record["train"]["total_params"]
    assert (trainable == total) if method == "full" else (0 < trainable < total)
    assert (out / "model" / ("adapter_config.json" if method == "lora" else "config.json")).exists()
    results = json.loads((out / "results.json").read_text())
    assert {"accuracy", "f1_macro", "unmatched_rate", "n"} <= set(results["metrics"])
    assert results["metrics"]["unmatched_rate"] == 0  # a classifier head always names a label
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    labels = json.loads((out / "model" / "labels.json").read_text())
    assert len(preds) == 8 and all(p["label"] in labels for p in preds)
    again = evaluate_experiment(out)
    preds2 = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in preds2] == [p["prediction"] for p in preds]
    assert again["metrics"] == results["metrics"]


def test_encoder_refuses_summarization(tiny_models, data_dir, tmp_path):
    cfg = bert_config(tiny_models["bert"], data_dir, tmp_path / "exp", task="summarization")
    with pytest.raises(HubError, match="only does classification"):
        train_experiment(cfg)
