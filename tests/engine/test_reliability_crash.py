"""Crash safety: kill -9 a tiny sweep at every stage of a run (training, a checkpoint save, saving
the model, evaluation, writing results), rerun the same command each time, and the final results
must equal an uninterrupted sweep's: metrics and predictions identical."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("r2", "r4")


def _steps(run: Path, complete: bool) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*")
                  if (p / "trainer_state.json").is_file() == complete)


# Each stage is made when a process starts (so it sees only what that process does) and says
# whether the process has reached it.
def training(run: Path):  # a new checkpoint was completed, and the next steps are under way
    seen = max(_steps(run, True), default=0)
    return lambda: max(_steps(run, True), default=0) > seen and not (run / "model").exists()


def saving_checkpoint(run: Path):  # a checkpoint folder without its trainer_state.json (or just after)
    seen = max(_steps(run, True), default=0)
    return lambda: bool(_steps(run, False)) or max(_steps(run, True), default=0) > seen + 1


def saving_model(run: Path):
    had = (run / "model").exists()
    return lambda: (run / "model.tmp").exists() or (not had and (run / "model").exists())


def evaluating(run: Path):
    return lambda: (run / "model").exists() and not (run / "predictions.jsonl").exists()


def writing_results(run: Path):
    return lambda: (run / "predictions.jsonl").exists() or any(run.glob(".results.json.*.tmp"))


# (run, stage), in the order a sweep reaches them; each kill lands when its stage is first seen
KILLS = [("r2", training), ("r2", saving_checkpoint), ("r2", saving_model), ("r2", writing_results),
         ("r4", training), ("r4", saving_checkpoint), ("r4", evaluating)]


def sweep(grid: Path, root: Path, kill_when=None) -> tuple[int | None, bool]:
    """Run the sweep; with kill_when=(run, stage), SIGKILL it when the stage is seen. Returns
    (exit status, whether it was killed)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "llmhub", "sweep", str(grid), "--output_root", str(root)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    if kill_when:
        run, make_stage = kill_when
        reached = make_stage(root / run)
        while proc.poll() is None and time.time() < deadline:
            if reached():
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return proc.returncode, True
            time.sleep(0.001)
    _, err = proc.communicate(timeout=max(1, deadline - time.time()))
    assert proc.returncode == 0, err[-3000:]
    return proc.returncode, False


def outcome(root: Path) -> dict:
    return {run: (json.loads((root / run / "results.json").read_text())["metrics"],
                  (root / run / "predictions.jsonl").read_text()) for run in RUNS}


def test_killed_sweep_resumes_to_identical_results(tiny_models, data_dir, tmp_path):
    base = {"pretrained_ckpt": str(tiny_models["llama"]), "data_dir": str(data_dir), "task": "summarization",
            "train_samples": 8, "test_samples": 3, "max_steps": 6, "save_steps": 1, "batch_size": 2,
            "max_source_length": 64, "max_target_length": 16, "max_new_tokens": 6, "eval_batch_size": 2,
            "logging_steps": 1}  # dropout stays on: resumed RNG state must match too
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"name": "r{lora_r}", "base": base, "grid": {"lora_r": [2, 4]}}))
    sweep(grid, tmp_path / "clean")

    crashed = tmp_path / "crashed"
    killed = [name for run, stage in KILLS for name in [f"{run}:{stage.__name__}"]
              if sweep(grid, crashed, (run, stage))[1]]
    assert len(killed) >= 4, killed  # most stages were really hit (a stage passed too fast is skipped)
    sweep(grid, crashed)  # the same command once more finishes what is left
    assert outcome(crashed) == outcome(tmp_path / "clean"), killed
    for run in RUNS:
        results = json.loads((crashed / run / "results.json").read_text())
        assert results["train"]["steps"] == 6 and not (crashed / run / "checkpoints").exists()
