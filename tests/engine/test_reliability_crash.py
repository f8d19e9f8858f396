"""Crash safety: kill -9 a tiny sweep at every stage of a run (training, a checkpoint save, saving
the model, evaluation after its first generated batch, writing results), rerun the same
command each time, and the final results must equal an uninterrupted sweep's: metrics and
predictions identical. The sweep kills itself at each stage (a hook run before `llmhub sweep`), so
no stage is missed on a fast or a loaded machine."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("r2", "r4")


def _steps(run: Path, complete: bool) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*")
                  if (p / "trainer_state.json").is_file() == complete)


# Each stage is a point inside the sweep's own process where it kills itself (SIGKILL, nothing is
# cleaned up), so every stage is reached on every machine, however fast or loaded. The code runs in
# the sweep process before `llmhub sweep` starts; RUN is the run folder, STAGE the stage.
KILL_AT = r"""
import os, signal, sys
from pathlib import Path

import transformers

from llmhub import cli, experiment, generate

run, stage = Path(os.environ["CRASH_RUN"]), os.environ["CRASH_STAGE"]
kill = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
inside = lambda path: Path(path).resolve().is_relative_to(run.resolve())  # noqa: E731
if stage == "training":  # a checkpoint of this process was completed and the next step is under way
    step, first = transformers.Trainer.training_step, []

    def training_step(self, *a, **kw):
        first.append(self.state.global_step)
        if inside(self.args.output_dir) and self.state.global_step > first[0]:
            kill()
        return step(self, *a, **kw)
    transformers.Trainer.training_step = training_step
elif stage == "saving_checkpoint":  # weights saved, the checkpoint's trainer_state.json not yet
    save = transformers.TrainerState.save_to_json

    def save_to_json(self, path):
        if inside(path) and "checkpoint-" in str(path):
            kill()
        return save(self, path)
    transformers.TrainerState.save_to_json = save_to_json
elif stage == "saving_model":  # model.tmp/ holds the weights, not yet its training record
    write_json = experiment.write_json

    def write_and_kill(path, obj):
        if Path(path).parent == run / "model.tmp" and Path(path).name == experiment.TRAIN_STATS:
            kill()
        return write_json(path, obj)
    experiment.write_json = write_and_kill
elif stage == "generating":  # the saved model predicting the test split: its first batch kept
    add = generate.Journal.add

    def add_and_kill(self, *a, **kw):
        add(self, *a, **kw)
        if inside(self.path):
            kill()
    generate.Journal.add = add_and_kill
elif stage == "writing_results":  # results.json written to its temporary file, not yet renamed
    replace = os.replace

    def replace_and_kill(src, dst, *a, **kw):
        if Path(dst) == run / "results.json":
            kill()
        return replace(src, dst, *a, **kw)
    os.replace = replace_and_kill
else:
    raise SystemExit(f"unknown stage {stage}")
cli.main(sys.argv[1:])
"""
STAGES = ("training", "saving_checkpoint", "saving_model", "generating", "writing_results")
# (run, stage) in the order a sweep reaches them: r2 at every stage the README names, then r4 twice
KILLS = [("r2", stage) for stage in STAGES] + [("r4", "training"), ("r4", "writing_results")]


def sweep(grid: Path, root: Path, kill_at: tuple[str, str] | None = None) -> bool:
    """Run the sweep; with kill_at=(run, stage) it kills itself there. Returns whether it was killed."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    argv = ["sweep", str(grid), "--output_root", str(root)]
    if kill_at:
        env.update(CRASH_RUN=str(root / kill_at[0]), CRASH_STAGE=kill_at[1])
        cmd = [sys.executable, "-c", KILL_AT, *argv]
    else:
        cmd = [sys.executable, "-m", "llmhub", *argv]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=300)
    if proc.returncode == -signal.SIGKILL:
        return True
    assert proc.returncode == 0, proc.stderr[-3000:]
    return False


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
    for run, stage in KILLS:
        assert sweep(grid, crashed, (run, stage)), f"the sweep never reached {run}:{stage}"
        if stage == "saving_checkpoint":  # killed inside a checkpoint: a truncated one is left behind
            assert _steps(crashed / run, False)
        if stage == "generating":  # one of the run's two test batches kept
            assert len((crashed / run / "predictions.partial.jsonl").read_text().splitlines()) == 1
        if stage == "writing_results":
            assert any(crashed.glob(f"{run}/.results.json.*.tmp")) and not (crashed / run / "results.json").exists()
    assert not sweep(grid, crashed)  # the same command once more finishes what is left
    assert outcome(crashed) == outcome(tmp_path / "clean")
    for run in RUNS:
        results = json.loads((crashed / run / "results.json").read_text())
        assert results["train"]["steps"] == 6 and not (crashed / run / "checkpoints").exists()
        assert not (crashed / run / "predictions.partial.jsonl").exists()
