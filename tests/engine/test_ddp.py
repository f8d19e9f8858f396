"""Two CPU processes (DDP over gloo) run an unchanged training script under `accelerate launch` with
the shipped config: both ranks must end with the same trained weights, and exactly one rank may save
the model and write predictions/results."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in each rank: records a hash of the trainable weights after training and which ranks
# evaluate, then runs the real per-model script exactly as a user would.
ENTRY = '''
import hashlib, os, runpy, sys, time
from pathlib import Path

import torch.distributed as dist

import llmhub.experiment as E
import llmhub.train as T

MARKS = Path(os.environ["DDP_TEST_MARKS"])
RANK = os.environ.get("RANK", "0")
_fit, _evaluate = T.fit, E.evaluate_into


def fit(model, *args, **kwargs):
    stats = _fit(model, *args, **kwargs)
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().contiguous().numpy().tobytes())
    # Training ends with the process group left (a rank exiting while it is open can abort).
    group = "open" if dist.is_initialized() else "left"
    (MARKS / f"hash-rank{RANK}").write_text(f"{h.hexdigest()} {stats['steps']} {os.environ.get('WORLD_SIZE', '1')} {group}")
    return stats


def evaluate_into(*args, **kwargs):
    (MARKS / f"evaluated-rank{RANK}").write_text("")
    return _evaluate(*args, **kwargs)


T.fit, E.evaluate_into = fit, evaluate_into
if RANK == "1":  # start late, once rank 0 has written config.yaml: a rank must not take it for a stale run
    config = Path(os.environ["DDP_TEST_OUT"]) / "config.yaml"
    deadline = time.time() + 120
    while not config.exists() and time.time() < deadline:
        time.sleep(0.2)
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_shipped(config: str, tiny_models, data_dir, tmp_path):
    """Launch llama2_classification.py (LoRA, 3 steps) on 2 CPU ranks through a shipped accelerate
    config under ENTRY; returns the process, the marks folder and the experiment folder."""
    entry = tmp_path / "entry.py"
    entry.write_text(ENTRY)
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "exp"
    env = {**os.environ, "DDP_TEST_MARKS": str(marks), "DDP_TEST_OUT": str(out),
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "PYTHONFAULTHANDLER": "1"}  # a rank that aborts prints where each of its threads was
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(ROOT / "configs" / "accelerate" / config),
           "--main_process_port", str(_free_port()), str(entry),
           str(ROOT / "llama2" / "llama2_classification.py"),
           "--pretrained_ckpt", str(tiny_models["llama"]), "--method", "lora", "--data_dir", str(data_dir),
           "--output_dir", str(out), "--train_samples", "16", "--test_samples", "4", "--max_steps", "3",
           "--batch_size", "2", "--grad_accum", "1", "--learning_rate", "1e-2", "--lora_r", "4",
           "--max_source_length", "64", "--max_new_tokens", "4", "--eval_batch_size", "4",
           "--logging_steps", "1"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280, cwd=tmp_path), marks, out


def test_two_cpu_ranks_agree_and_one_writes(tiny_models, data_dir, tmp_path):
    proc, marks, out = launch_shipped("cpu_ddp.yaml", tiny_models, data_dir, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hashes = {p.name: p.read_text().split() for p in marks.glob("hash-rank*")}
    assert sorted(hashes) == ["hash-rank0", "hash-rank1"], proc.stderr[-2000:]
    (h0, steps0, world0, group0), (h1, steps1, world1, group1) = hashes["hash-rank0"], hashes["hash-rank1"]
    assert world0 == world1 == "2" and steps0 == steps1 == "3" and group0 == group1 == "left"  # one process group of two ranks
    assert h0 == h1  # DDP averaged the gradients, so every rank applied the same updates
    assert sorted(p.name for p in marks.glob("evaluated-rank*")) == ["evaluated-rank0"]
    results = json.loads((out / "results.json").read_text())
    assert results["train"]["steps"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "model", "predictions.jsonl", "results.json"]


def test_shipped_accelerate_configs_load():
    """Every launcher config parses as accelerate reads it; DeepSpeed JSONs leave batch/accumulation to the flags."""
    from accelerate.commands.config.config_args import load_config_from_file

    folder = ROOT / "configs" / "accelerate"
    expected = {"cpu_ddp.yaml": "MULTI_GPU", "ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP",
                "deepspeed_zero2.yaml": "DEEPSPEED", "deepspeed_zero3.yaml": "DEEPSPEED"}
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(expected)
    for name, kind in expected.items():
        cfg = load_config_from_file(str(folder / name))
        assert str(cfg.distributed_type).split(".")[-1] == kind and cfg.num_processes == 2, name
        if kind == "DEEPSPEED":
            ds_file = ROOT / cfg.deepspeed_config["deepspeed_config_file"]
            ds = json.loads(ds_file.read_text())
            assert ds["zero_optimization"]["stage"] == int(name[-6])
            assert ds["gradient_accumulation_steps"] == ds["train_micro_batch_size_per_gpu"] == "auto"
    assert load_config_from_file(str(folder / "cpu_ddp.yaml")).use_cpu
