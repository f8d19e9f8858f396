"""The shipped DeepSpeed ZeRO-2 config (configs/accelerate/deepspeed_zero2.yaml + ds_zero2.json) launched
for real on 2 CPU ranks: DeepSpeed's CPU accelerator (DS_ACCELERATOR=cpu) talks over gloo when
oneCCL's bindings are absent, and JIT-builds its shared-memory comm op with the machine's g++ on first
use (cached in ~/.cache/torch_extensions; about two minutes on one core the first time).

The run is checked as test_ddp.py checks DDP (both ranks agree, exactly one rank evaluates and writes
results) and, in addition, against a single process training on the same global batch: in fp32 and
without LoRA dropout (which draws different masks on each rank) ZeRO-2 must end with the same
weights and losses. The shipped config is used unchanged, so the run starts from the repository root,
where its relative path to ds_zero2.json resolves."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from test_ddp import ENTRY, ROOT, _free_port

pytestmark = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                reason="deepspeed is not installed (pip install -e '.[deepspeed]')")

# Runs first in each process: saves the trainable weights and the per-step losses after training,
# then hands over to test_ddp's ENTRY (which hashes the weights and runs the real script).
SAVE = '''
import json, os, runpy, sys
from pathlib import Path

import torch

import llmhub.train as T

_marks, _rank, _fit = Path(os.environ["DDP_TEST_MARKS"]), os.environ.get("RANK", "0"), T.fit


def fit(model, *args, **kwargs):
    stats = _fit(model, *args, **kwargs)
    torch.save({n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad},
               _marks / f"weights-rank{_rank}.pt")
    (_marks / f"losses-rank{_rank}.json").write_text(json.dumps([e["loss"] for e in stats["loss_log"]]))
    return stats


T.fit = fit
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def _run(tmp_path, name, launcher, batch_size, tiny_models, data_dir, cwd):
    folder = tmp_path / name
    marks, out = folder / "marks", folder / "exp"
    marks.mkdir(parents=True)
    (folder / "save.py").write_text(SAVE)
    (folder / "entry.py").write_text(ENTRY)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DDP_TEST_MARKS=str(marks), DDP_TEST_OUT=str(out), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", DS_ACCELERATOR="cpu", CUDA_VISIBLE_DEVICES="", PYTHONFAULTHANDLER="1")
    cmd = launcher + [str(folder / "save.py"), str(folder / "entry.py"),
                      str(ROOT / "llama2" / "llama2_classification.py"),
                      "--pretrained_ckpt", str(tiny_models["llama"]), "--method", "lora", "--data_dir", str(data_dir),
                      "--output_dir", str(out), "--train_samples", "16", "--test_samples", "4", "--max_steps", "3",
                      "--batch_size", str(batch_size), "--grad_accum", "1", "--learning_rate", "1e-2", "--lora_r", "4",
                      "--lora_dropout", "0", "--torch_dtype", "float32",
                      "--max_source_length", "64", "--max_new_tokens", "4", "--eval_batch_size", "4",
                      "--logging_steps", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return marks, out, proc


def test_shipped_zero2_config_on_two_cpu_ranks_matches_one_process(tiny_models, data_dir, tmp_path):
    import torch

    launch = [sys.executable, "-m", "accelerate.commands.launch",
              "--config_file", str(ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml"),
              "--main_process_port", str(_free_port())]
    marks, out, proc = _run(tmp_path, "zero2", launch, 2, tiny_models, data_dir, cwd=ROOT)
    hashes = {p.name: p.read_text().split() for p in marks.glob("hash-rank*")}
    assert sorted(hashes) == ["hash-rank0", "hash-rank1"], proc.stderr[-2000:]
    (h0, steps0, world0, group0), (h1, steps1, world1, group1) = hashes["hash-rank0"], hashes["hash-rank1"]
    assert world0 == world1 == "2" and steps0 == steps1 == "3" and group0 == group1 == "left"
    assert h0 == h1  # ZeRO-2 shards optimizer state and gradients, the weights end replicated and equal
    assert sorted(p.name for p in marks.glob("evaluated-rank*")) == ["evaluated-rank0"]
    assert json.loads((out / "results.json").read_text())["train"]["steps"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model", "predictions.jsonl", "results.json"]

    # One process, the same global batch (2 ranks x 2 = 4): the same updates, up to float rounding.
    one, _, _ = _run(tmp_path, "single", [sys.executable], 4, tiny_models, data_dir, cwd=tmp_path)
    ds, ref = torch.load(marks / "weights-rank0.pt"), torch.load(one / "weights-rank0.pt")
    assert sorted(ds) == sorted(ref)
    assert max((ds[k] - ref[k]).abs().max().item() for k in ds) < 1e-5
    assert max(v.abs().max().item() for k, v in ds.items() if "lora_B" in k) > 1e-3  # training moved them
    losses = json.loads((marks / "losses-rank0.json").read_text())
    assert losses == pytest.approx(json.loads((one / "losses-rank0.json").read_text()), abs=1e-3) and len(losses) == 3


def test_shipped_zero3_config_is_refused_in_one_line(tiny_models, data_dir, tmp_path):
    """ZeRO-3 shards the weights: rank 0 alone cannot save or evaluate them, so it stops before training."""
    launch = [sys.executable, "-m", "accelerate.commands.launch",
              "--config_file", str(ROOT / "configs" / "accelerate" / "deepspeed_zero3.yaml"),
              "--main_process_port", str(_free_port())]
    with pytest.raises(AssertionError) as failed:
        _run(tmp_path, "zero3", launch, 2, tiny_models, data_dir, cwd=ROOT)
    assert "error: DeepSpeed ZeRO-3 is not supported" in str(failed.value)
    assert not (tmp_path / "zero3" / "exp" / "model").exists()
