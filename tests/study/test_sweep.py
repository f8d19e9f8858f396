"""Sweeps: grid expansion and merging, resume, dry run, recorded failures, bad grids, Ray, shipped grids."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmhub.study import sweep
from llmhub.cli import main
from llmhub.errors import HubError
from llmhub.study.grid import expand, load_grid, parse_axes

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(ROOT.glob("*/grids/*.yaml"))
SCRIPTS = sorted(p for p in ROOT.glob("*/*.sh") if p.parent.name in ("flan-t5", "llama2", "falcon", "redpajama", "bert"))


def tiny_base(model_dir, data_dir) -> dict:
    """Overrides that make a run train 1 step on a tiny model (about a second on a CPU)."""
    return {"pretrained_ckpt": str(model_dir), "data_dir": str(data_dir), "method": "lora",
            "train_samples": 8, "test_samples": 2, "epochs": 1, "max_steps": 1, "batch_size": 4,
            "lora_r": 4, "lora_alpha": 8, "max_source_length": 64, "max_target_length": 16,
            "max_new_tokens": 4, "eval_batch_size": 4, "logging_steps": 1, "save_steps": 100}


def write_grid(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHON": sys.executable}
    return subprocess.run([sys.executable, "-m", "llmhub", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=300)


def test_expand_merges_every_depth(tmp_path):
    spec = {"model": "flan-t5", "task": "classification", "name": "r{lora_r}_e{epochs:g}",
            "base": {"method": {"lora_alpha": 8}, "train.batch_size": 2},
            "grid": {"method.lora_r": [2, 4], "epochs": [1, 2]},
            "runs": [{"name": "full", "method": "full"}, {"name": "summ", "task": "summarization"}]}
    runs = expand(spec, tmp_path, sets={"train.learning_rate": 0.01})
    assert [r.name for r in runs] == ["r2_e1", "r2_e2", "r4_e1", "r4_e2", "full", "summ"]
    first = runs[0].config
    assert first["method"] == {**first["method"], "method": "lora", "lora_r": 2, "lora_alpha": 8,
                               "lora_dropout": 0.1}  # recipe, base and cell all present
    assert first["model"]["pretrained_ckpt"] == "google/flan-t5-large"  # from the flan-t5 recipe
    assert first["train"]["batch_size"] == 2 and first["train"]["learning_rate"] == 0.01
    assert first["data"]["task"] == "classification" and first["data"]["clean"] == "strip"
    assert runs[4].config["method"]["method"] == "full" and runs[4].config["method"]["lora_r"] == 16
    assert runs[5].config["data"]["task"] == "summarization"
    assert first["output_dir"] == str(tmp_path / "r2_e1")
    # --grid replaces an axis in place; a dict value is a zipped axis of several keys
    runs = expand(spec | {"runs": None}, tmp_path, axes=parse_axes(["lora_r=8", "epochs=[3]"]))
    assert [r.name for r in runs] == ["r8_e3"]
    zipped = {"grid": {"variant": [{"method": "prefix", "num_virtual_tokens": 4}, {"method": "ia3"}]}}
    assert [r.config["method"]["method"] for r in expand(zipped, tmp_path)] == ["prefix", "ia3"]


def test_expand_rejects_bad_grids(tmp_path):
    with pytest.raises(HubError, match="would share the folder 'same'"):
        expand({"name": "same", "grid": {"lora_r": [2, 4]}}, tmp_path)
    with pytest.raises(HubError, match="'nope' is not a config key"):
        expand({"name": "{nope}", "grid": {"lora_r": [2]}}, tmp_path)
    with pytest.raises(HubError, match="unknown baseline mode 'ten-shot'"):
        expand({"action": "baseline", "grid": {"mode": ["ten-shot"]}}, tmp_path)
    with pytest.raises(HubError, match="unknown method 'lora2'"):
        expand({"grid": {"method": ["lora2"]}}, tmp_path)


@pytest.mark.parametrize("spec,message", [
    ({"grid": {"lora_rank": [2, 4]}}, "grid key 'lora_rank' value 2: unknown config key 'lora_rank'; valid keys:"),
    ({"grid": {"lora_r": [2, "two"]}}, "grid key 'lora_r' value 'two': config key 'lora_r' must be an integer, got 'two'"),
    ({"grid": {}}, "empty grid"),
    ({"grid": {"lora_r": []}}, "grid key 'lora_r' has no values"),
    ({"grid": {"lora_r": 4}}, "grid key 'lora_r' must be a list of values"),
    ({"grdi": {"lora_r": [4]}}, "unknown grid file key(s) grdi; allowed:"),
    ({"base": {"torch_dtype": "bf16"}, "grid": {"lora_r": [4]}},
     "base: unknown torch_dtype 'bf16'; allowed: auto, float32, bfloat16, float16"),
])
def test_bad_grid_is_one_line_and_nonzero(tmp_path, spec, message):
    proc = cli("sweep", str(write_grid(tmp_path / "g.yaml", spec)), "--output_root", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    if "valid keys" in message:
        assert "lora_r" in lines[0] and "pretrained_ckpt" in lines[0]
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_and_writes_nothing(tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", {"task": "classification", "name": "r{lora_r}", "base": {"method": "lora"},
                                            "grid": {"lora_r": [2, 4, 8]}})
    main(["sweep", str(grid), "--output_root", str(tmp_path / "out"), "--dry-run", "--set", "epochs=1"])
    out = capsys.readouterr().out
    assert out.count("run ") >= 3 and "r8" in out and "3 runs: 3 to run, 0 finished" in out
    main(["sweep", str(grid), "--output_root", str(tmp_path / "out"), "--dry-run", "--only", "r2,r8"])
    out = capsys.readouterr().out
    assert "2 runs: 2 to run" in out and "r4" not in out
    with pytest.raises(SystemExit):
        main(["sweep", str(grid), "--output_root", str(tmp_path / "out"), "--dry-run", "--only", "r3"])
    assert "no run named r3; runs: r2, r4, r8" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_resume_skips_finished_runs(tiny_models, data_dir, tmp_path, capsys):
    grid = write_grid(tmp_path / "g.yaml", {"task": "classification", "name": "r{lora_r}",
                                            "base": tiny_base(tiny_models["t5"], data_dir), "grid": {"lora_r": [2, 4]}})
    out = tmp_path / "out"
    main(["sweep", str(grid), "--output_root", str(out)])
    done = {n: (out / n / "results.json").stat().st_mtime_ns for n in ("r2", "r4")}
    assert json.loads((out / "sweep.json").read_text())["runs"][1]["name"] == "r4"
    (out / "r4" / "results.json").unlink()  # as if the sweep had been killed during r4
    capsys.readouterr()
    main(["sweep", str(grid), "--output_root", str(out)])
    log = capsys.readouterr().out
    assert "2 runs: 1 to run, 1 finished" in log and "[1/1] r4" in log
    assert (out / "r2" / "results.json").stat().st_mtime_ns == done["r2"]  # untouched
    assert (out / "r4" / "results.json").exists()
    # flan-t5/inference.sh evaluates only experiments without results.json (unless --force)
    (out / "r2" / "results.json").unlink()
    proc = subprocess.run(["bash", str(ROOT / "flan-t5" / "inference.sh"), str(out), "--data_dir", str(data_dir)],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"skip {out}/r4" in proc.stdout and f"evaluate {out}/r2" in proc.stdout
    assert (out / "r2" / "results.json").exists()


def test_failed_run_is_recorded_and_others_finish(tiny_models, data_dir, tmp_path, capsys):
    base = tiny_base(tiny_models["llama"], data_dir)
    grid = write_grid(tmp_path / "g.yaml", {"task": "summarization", "base": base, "runs": [
        {"name": "bad", "pretrained_ckpt": str(tmp_path / "no-such-model")},
        {"name": "good"},
        {"name": "zero-shot", "action": "baseline", "mode": "zero-shot"}]})
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(grid), "--output_root", str(out)])
    assert exit_info.value.code == 2
    assert "1 of 3 runs failed (bad)" in capsys.readouterr().err
    error = json.loads((out / "bad" / "error.json").read_text())
    assert "unknown model" in error["error"] and error["config"]["output_dir"] == str(out / "bad")
    assert (out / "good" / "results.json").exists() and not (out / "good" / "error.json").exists()
    zs = json.loads((out / "zero-shot" / "results.json").read_text())
    assert zs["mode"] == "zero-shot" and zs["train"] is None


def test_ray_backend_runs_one_task_per_run(tiny_models, data_dir, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    ray = sweep.init_ray(None, {"num_cpus": 2})  # Ray installed: a start that fails is a failure
    try:
        spec = {"task": "classification", "name": "r{lora_r}", "base": tiny_base(tiny_models["t5"], data_dir),
                "grid": {"lora_r": [2, 4]}}
        runs = expand(spec, tmp_path / "out")
        results = sweep.run_sweep(runs, backend="ray", cpus_per_trial=1, gpus_per_trial=0)
        assert sorted(r["status"] for r in results) == ["done", "done"], results
        assert all((tmp_path / "out" / n / "results.json").exists() for n in ("r2", "r4"))
        assert sweep.run_sweep(runs, backend="ray") == []  # all finished: nothing is submitted
    finally:
        ray.shutdown()


@pytest.mark.parametrize("grid", SHIPPED, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_shipped_grid_validates(grid, tmp_path):
    runs = expand(load_grid(grid), tmp_path, src=str(grid))
    assert runs and len({r.name for r in runs}) == len(runs)


def test_shipped_scripts_are_thin_and_work_from_any_cwd(tmp_path):
    names = {f"{p.parent.name}/{p.name}" for p in SCRIPTS}
    for model in ("llama2", "falcon", "redpajama"):
        assert {f"{model}/run_lora.sh", f"{model}/sample_ablate.sh", f"{model}/baseline_inference.sh"} <= names
    assert {"flan-t5/run_lora.sh", "flan-t5/run_prefix.sh", "flan-t5/inference.sh", "bert/ablate.sh"} <= names
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), script
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, script
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([str(ROOT / "bert" / "ablate.sh"), "--dry-run", "--grid", "pretrained_ckpt=minilm-l6",
                           "--grid", "train_samples=266,533", "--output_root", "out"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "out/minilm-l6_n266" in proc.stdout and "2 runs: 2 to run" in proc.stdout
    assert not (tmp_path / "out").exists()
