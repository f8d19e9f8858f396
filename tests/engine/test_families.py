"""Falcon and GPT-NeoX (RedPajama) under the falcon/ and redpajama/ recipes: LoRA and QLoRA on both
tasks train a few steps on tiny random models, save, reload and evaluate to the same predictions."""
from __future__ import annotations

import json

import pytest

from llmhub.config import RunConfig, apply_overrides
from llmhub.experiment import evaluate_experiment, train_experiment
from llmhub.models import LORA_TARGETS
from llmhub.recipes import defaults

FUSED = ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def folder_config(folder, model_dir, data_dir, out, task, method) -> RunConfig:
    """The folder's recipe for the task, shrunk to a few steps of a tiny model."""
    over = {"pretrained_ckpt": str(model_dir), "method": method, "data_dir": str(data_dir),
            "output_dir": str(out), "train_samples": 16, "test_samples": 4, "epochs": 1, "max_steps": 2,
            "batch_size": 4, "grad_accum": 1, "learning_rate": 1e-3, "lora_r": 4, "lora_alpha": 8,
            "max_source_length": 96, "max_target_length": 24, "max_new_tokens": 6, "eval_batch_size": 4,
            "logging_steps": 1}
    return apply_overrides(apply_overrides(RunConfig(), defaults(folder, task)), over)


def test_recipes_default_to_qlora_with_fused_targets():
    for folder, ckpt in (("falcon", "tiiuae/falcon-7b"), ("redpajama", "togethercomputer/RedPajama-INCITE-Base-3B-v1")):
        for task, r in (("classification", 8), ("summarization", 64)):
            cfg = apply_overrides(RunConfig(), defaults(folder, task))
            assert (cfg.model.pretrained_ckpt, cfg.method.method, cfg.method.lora_r) == (ckpt, "qlora", r)
            assert cfg.train.learning_rate == 2e-4 and cfg.data.task == task
    assert LORA_TARGETS["falcon"] == FUSED and LORA_TARGETS["gpt_neox"] == FUSED


@pytest.mark.parametrize("arch,folder", [("falcon", "falcon"), ("gpt_neox", "redpajama")])
@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("task", ["classification", "summarization"])
def test_train_save_load_evaluate(tiny_models, data_dir, tmp_path, arch, folder, method, task):
    out = tmp_path / "exp"
    record = train_experiment(folder_config(folder, tiny_models[arch], data_dir, out, task, method))
    assert record["train"]["steps"] == 2 and record["train"]["trainable_params"] > 0
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(FUSED)  # every fused layer carries LoRA
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["method"]["method"] == method
    metric = "accuracy" if task == "classification" else "rouge1"
    assert metric in results["metrics"] and results["metrics"]["n"] == 4
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    again = evaluate_experiment(out)
    preds2 = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in preds2] == [p["prediction"] for p in preds]
    assert again["metrics"] == results["metrics"]


def test_unknown_architecture_lora_targets_fail_in_one_line(tmp_path, tiny_models, data_dir):
    """A GPT-2 checkpoint has no default LoRA targets: one line saying so and how to pass them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    model_dir = tiny_models["gpt2"]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(root / "redpajama" / "redpajama_classification.py"),
                           "--pretrained_ckpt", str(model_dir), "--method", "lora", "--data_dir", str(data_dir),
                           "--output_dir", str(tmp_path / "exp")], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "no default LoRA targets for architecture 'gpt2'" in errors[0] and "--target_modules" in errors[0]
    assert not (tmp_path / "exp").exists()


LLAMA_STYLE = ["q_proj", "v_proj"]


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
@pytest.mark.parametrize("method", ["lora", "qlora", "dora", "ia3", "prefix", "prompt", "full"])
def test_gemma3_and_qwen2_train_every_method(tiny_models, data_dir, tmp_path, arch, method):
    """Gemma 3 and Qwen2 (the offline Gemma-3-270M and Qwen2.5-1.5B's architectures) under the llama2/
    recipe: every method trains, saves, reloads and evaluates to the same predictions, with the
    registry's default targets (no --target_modules)."""
    out = tmp_path / "exp"
    cfg = folder_config("llama2", tiny_models[arch], data_dir, out, "summarization", method)
    record = train_experiment(cfg)
    assert record["train"]["steps"] == 2 and record["train"]["trainable_params"] > 0
    if method in ("lora", "qlora", "dora"):
        adapter = json.loads((out / "model" / "adapter_config.json").read_text())
        assert sorted(adapter["target_modules"]) == LLAMA_STYLE
    if method == "ia3":
        adapter = json.loads((out / "model" / "adapter_config.json").read_text())
        assert sorted(adapter["target_modules"]) == ["down_proj", "k_proj", "v_proj"]
    preds = (out / "predictions.jsonl").read_text()
    again = evaluate_experiment(out)
    assert (out / "predictions.jsonl").read_text() == preds
    assert again["metrics"] == record["metrics"] and record["metrics"]["n"] == 4


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
def test_gemma3_and_qwen2_classify(tiny_models, data_dir, tmp_path, arch):
    out = tmp_path / "exp"
    record = train_experiment(folder_config("llama2", tiny_models[arch], data_dir, out, "classification", "lora"))
    assert "accuracy" in record["metrics"] and record["metrics"]["n"] == 4
