"""PEFT options beyond the seeds' methods: DoRA, rsLoRA and `all-linear` targets train and reload."""
from __future__ import annotations

import json

import pytest

from llmhub.experiment import evaluate_experiment, train_experiment
from test_experiments import tiny_config

LLAMA_LINEAR = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.mark.parametrize("method,extra", [
    ("dora", {}),
    ("lora", {"target_modules": ["all-linear"], "use_rslora": True}),
])
def test_trains_and_reloads_to_the_same_predictions(tiny_models, data_dir, tmp_path, method, extra):
    out = tmp_path / "exp"
    record = train_experiment(tiny_config(tiny_models["llama"], data_dir, out, "summarization", method, **extra))
    adapter = json.loads((out / "model" / "adapter_config.json").read_text())
    assert adapter["use_dora"] is (method == "dora")
    assert adapter["use_rslora"] is bool(extra.get("use_rslora"))
    expected = LLAMA_LINEAR if extra else {"q_proj", "v_proj"}  # all-linear leaves out lm_head
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == expected
    again = evaluate_experiment(out)
    assert again["metrics"] == record["metrics"]
