"""inference/merge.py (llmhub/adapters.py) on tiny trained experiments: seq2seq (the original's seq2seq branch never
loaded the adapter), causal and encoder; the merged folder reproduces base + adapter, serves the
same predictions, and unmergeable or broken inputs fail with one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmhub import models
from llmhub.errors import HubError
from llmhub.serve.predictor import Predictor
from test_server import eval_rows, trained_experiment

from llmhub.adapters import CHECK_TEXTS, compare, logits_of, merge

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("family, task, method", [
    ("t5", "summarization", "lora"), ("llama", "classification", "ia3"), ("bert", "classification", "lora"),
    ("gemma3", "summarization", "lora"), ("qwen2", "classification", "ia3")])
def test_merge_reproduces_base_plus_adapter(tmp_path, tiny_models, data_dir, family, task, method):
    exp = trained_experiment(tmp_path, tiny_models[family], data_dir, task=task, method=method,
                             learning_rate=5e-2)
    out = tmp_path / "merged"
    info = merge(exp, out)
    assert info["max_abs_logit_diff"] <= 1e-3 and info["checked_prompts"] == len(CHECK_TEXTS)
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert (out / "llmhub.yaml").is_file() and (out / "merge.json").is_file()
    # The adapter really is in the merged weights: the merged model differs from the bare base.
    fam = models.family_of(models.load_config(str(out)))
    merged_pred = Predictor.from_model(str(out))
    base = models.load_base_model(str(tiny_models[family]), fam, torch.float32,
                                  num_labels=len(merged_pred.labels) or None, label_names=merged_pred.labels or None)
    prompts = merged_pred.render(CHECK_TEXTS)
    with pytest.raises(HubError, match="differ"):
        compare(logits_of(base, merged_pred.tokenizer, fam, prompts, 96),
                logits_of(merged_pred.model, merged_pred.tokenizer, fam, prompts, 96), 1e-4, 1e-3)
    # Served from the merged folder (its llmhub.yaml gives the template), answers equal the experiment's.
    rows = eval_rows(exp)
    got = [p["prediction"] for p in merged_pred.predict([r["input"] for r in rows])]
    assert got == [r["expected"] for r in rows]


def test_merge_refusals(tmp_path, tiny_models, data_dir):
    prefix = trained_experiment(tmp_path, tiny_models["llama"], data_dir, method="prefix")
    with pytest.raises(HubError, match="cannot be merged"):
        merge(prefix, tmp_path / "m1")
    full = trained_experiment(tmp_path, tiny_models["llama"], data_dir, method="full")
    with pytest.raises(HubError, match="already standalone"):
        merge(full, tmp_path / "m2")
    with pytest.raises(HubError, match="not an experiment directory"):
        merge(tmp_path / "nowhere", tmp_path / "m3")


def test_broken_merge_fails_loudly_and_keeps_nothing(tmp_path, tiny_models, data_dir, monkeypatch):
    from peft.tuners.lora import LoraModel

    exp = trained_experiment(tmp_path, tiny_models["llama"], data_dir, learning_rate=5e-2)
    out = tmp_path / "merged"
    real = LoraModel.merge_and_unload

    def broken(self, *a, **kw):  # a merge that drops part of the update, as a buggy one would
        model = real(self, *a, **kw)
        with torch.no_grad():
            model.model.layers[0].self_attn.q_proj.weight.mul_(0.5)
        return model

    monkeypatch.setattr(LoraModel, "merge_and_unload", broken)
    with pytest.raises(HubError, match="merged and unmerged logits differ"):
        merge(exp, out)
    assert not out.exists() and not out.with_name("merged.tmp").exists()


def test_cli(tmp_path, tiny_models, data_dir):
    exp = trained_experiment(tmp_path, tiny_models["llama"], data_dir)
    out = tmp_path / "merged"
    cmd = [sys.executable, str(ROOT / "inference" / "merge.py"), "--experiment_dir", str(exp), "--output_dir", str(out)]
    r = subprocess.run(cmd + ["--atol", "-1"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "error: tolerances must be >= 0, got atol=-1.0, rtol=0.001"
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "merge.json").read_text())["peft_type"] == "LORA"
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "pass --overwrite" in r.stderr and "Traceback" not in r.stderr


def test_vllm_launch_merged_dir_refusals(tmp_path, tiny_models, data_dir):
    """inference/vllm/launch.py --merged_dir: only for an adapter experiment, and never into a folder
    holding anything but an earlier merge (checked before vLLM starts; any python stands in for vLLM's)."""
    exp = trained_experiment(tmp_path, tiny_models["llama"], data_dir)
    launch = [sys.executable, str(ROOT / "inference" / "vllm" / "launch.py"), "--python", sys.executable]
    r = subprocess.run(launch + ["--model", str(exp / "model"), "--merged_dir", str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == \
        "error: --merged_dir needs --experiment_dir of an adapter experiment and no --adapter"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    r = subprocess.run(launch + ["--experiment_dir", str(exp), "--merged_dir", str(busy)], capture_output=True, text=True)
    assert r.returncode == 2 and "holds files that are not a merged model (no merge.json)" in r.stderr
    assert (busy / "notes.txt").read_text() == "mine"
    r = subprocess.run(launch + ["--model", "nosuch"], capture_output=True, text=True,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
        "error: unknown model 'nosuch': not a registry name") and "Traceback" not in r.stderr
