"""One resolver: however the task is spelled, the run's config is the same (issue: spelling changed it)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmhub.errors import HubError
from llmhub.recipes import FOLDERS
from llmhub.resolve import resolve

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_follows_the_final_task_whoever_names_it():
    by_script = resolve("llama2", "summarization", layers=[("", {"task": "classification"})])
    by_flag = resolve("llama2", None, layers=[("", {"task": "classification"})])
    by_set = resolve("llama2", None, layers=[("", {}), ("", {"data.task": "classification"})])
    assert by_script == by_flag == by_set
    assert by_flag.method.lora_r == 8 and by_flag.data.clean == "strip"  # the classification row
    assert resolve("llama2", "summarization").method.lora_r == 64


def test_layers_apply_in_order(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("method: {lora_r: 4, lora_dropout: 0.3}\n")
    cfg = resolve("flan-t5", "summarization", config_file=conf, layers=[("", {"lora_r": 2})])
    assert (cfg.method.lora_r, cfg.method.lora_dropout, cfg.method.lora_alpha) == (2, 0.3, 32)


def test_train_and_baseline_share_the_default_task():
    for model in (None, *FOLDERS):
        assert resolve(model).data.task == resolve(model, action="baseline").data.task
    assert resolve("bert").data.task == "classification"  # the folder's declared task
    assert resolve("redpajama", action="baseline").model.pretrained_ckpt.endswith("Instruct-3B-v1")


def test_bad_layer_is_named(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("lora_rank: 4\n")
    with pytest.raises(HubError, match=f"{conf}: unknown config key 'lora_rank'"):
        resolve("llama2", config_file=conf)


def _run(args, cwd):
    out = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]


def test_three_spellings_write_the_same_config_yaml(tiny_models, data_dir, tmp_path):
    common = ["--pretrained_ckpt", str(tiny_models["llama"]), "--data_dir", str(data_dir),
              "--train_samples", "8", "--test_samples", "2", "--max_steps", "1", "--batch_size", "2",
              "--grad_accum", "1", "--max_new_tokens", "2", "--torch_dtype", "float32"]
    spellings = {
        "script": [str(ROOT / "llama2" / "llama2_summarization.py"), "--task", "classification"],
        "flag": ["-m", "llmhub", "train", "--model", "llama2", "--task", "classification"],
        "set": ["-m", "llmhub", "train", "--model", "llama2", "--set", "task=classification"],
    }
    configs = {}
    for name, args in spellings.items():
        out = tmp_path / name
        _run([*args, *common, "--output_dir", str(out)], tmp_path)
        cfg = yaml.safe_load((out / "config.yaml").read_text())
        assert cfg.pop("output_dir") == str(out)
        configs[name] = cfg
    assert configs["script"] == configs["flag"] == configs["set"]
    assert configs["flag"]["method"]["lora_r"] == 8 and configs["flag"]["data"]["clean"] == "strip"
    assert configs["flag"]["method"]["method"] == "qlora"
