"""The real offline models of the model study load, generate sensibly and train two LoRA steps:
Gemma-3-270M (installed by make test) and Qwen2.5-1.5B (installed by `make models`; skipped without
it, the install command as the reason). Both are dequantised from Q4_K_M GGUF files."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import SHARED_DATA
from llmhub import generate, models
from llmhub.config import RunConfig, apply_overrides
from llmhub.experiment import train_experiment
from llmhub.recipes import defaults

REAL = ["gemma3-270m", "qwen2.5-1.5b"]


def _need(name: str) -> None:
    if not models.installed(name):
        spec = models.REGISTRY[name]
        pytest.skip(f"{name} is not installed on this machine ({spec.download}): run `{spec.gguf.install}`")


@pytest.mark.parametrize("name", REAL)
def test_real_model_generates_sensibly(name):
    _need(name)
    path = models.resolve_path(name)
    tok = models.load_tokenizer(path, "causal")
    model = models.load_base_model(path, "causal", torch.bfloat16)
    out = generate.generate(model, tok, ["Question: What is the capital of France?\nAnswer:"], "causal", 6,
                            progress=False)
    assert "Paris" in out[0], out


@pytest.mark.skipif(not (SHARED_DATA / "samsum").is_dir(), reason=f"SAMSum not found at {SHARED_DATA}")
@pytest.mark.parametrize("name", REAL)
def test_real_model_trains_two_lora_steps(name, tmp_path):
    _need(name)
    over = {"pretrained_ckpt": name, "method": "lora", "data_dir": str(SHARED_DATA), "output_dir": str(tmp_path / "exp"),
            "train_samples": 4, "validation_samples": 4, "test_samples": 2, "max_steps": 2, "batch_size": 2, "grad_accum": 1,
            "learning_rate": 3e-4, "lora_r": 8, "max_source_length": 192, "max_target_length": 32,
            "max_new_tokens": 12, "eval_batch_size": 2, "logging_steps": 1}
    cfg = apply_overrides(apply_overrides(RunConfig(), defaults("llama2", "summarization")), over)
    record = train_experiment(cfg)
    assert record["train"]["steps"] == 2 and record["train"]["trainable_params"] > 0
    losses = [e["loss"] for e in record["train"]["loss_log"]]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses)
    adapter = json.loads((tmp_path / "exp" / "model" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]  # the registry's default targets
    preds = [json.loads(line)["prediction"] for line in (tmp_path / "exp" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(any(c.isalpha() for c in p) for p in preds)
