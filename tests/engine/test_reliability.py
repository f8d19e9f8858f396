"""What a hostile user breaks: every case is a real CLI process on a tiny Llama, and each was a
traceback, a lost result or a silently wrong run before it was fixed (see docs/engine.md "Bad input")."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd=ROOT, umask=0o022, timeout=300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "llmhub", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout, preexec_fn=lambda: os.umask(umask))


def error_line(proc) -> str:
    """The one `error:` line, exit status 2, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def T(tiny_models, data_dir, out, *extra) -> list[str]:
    """The issue's `T`: one step of LoRA on 8 dialogues, 2 test dialogues, 4 new tokens."""
    return ["train", "--pretrained_ckpt", str(tiny_models["llama"]), "--data_dir", str(data_dir),
            "--task", "summarization", "--train_samples", "8", "--test_samples", "2", "--max_steps", "1",
            "--batch_size", "4", "--max_new_tokens", "4", "--max_source_length", "64", "--output_dir", str(out),
            *extra]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_models, data_dir) -> Path:
    """One finished run (written under umask 002), copied by the tests that change it."""
    out = tmp_path_factory.mktemp("finished") / "FIN"
    ok(cli(*T(tiny_models, data_dir, out), umask=0o002))
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "EXP"))


def test_overwrite_never_deletes_a_folder_that_is_not_an_experiment(tiny_models, data_dir, tmp_path):
    project = tmp_path / "myproject"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.c").write_text("int main() { return 0; }\n")
    (project / "NOTES.txt").write_text("notes\n")
    (project / "config.yaml").write_text("looks: like an experiment\n")  # a marker alone is not enough
    before = snapshot(project)
    line = error_line(cli(*T(tiny_models, data_dir, project, "--overwrite")))
    assert "is not an experiment folder (it holds NOTES.txt, src); refusing to delete it" in line
    line = error_line(cli(*T(tiny_models, data_dir, project, "--resume")))
    assert "refusing to write into it" in line
    assert snapshot(project) == before


def test_overwrite_checks_the_new_flags_before_touching_the_old_run(finished, tiny_models, data_dir, tmp_path):
    exp = copy_of(finished, tmp_path)
    before = snapshot(exp)
    line = error_line(cli(*T(tiny_models, data_dir, exp, "--overwrite", "--batch_size", "0")))
    assert line == "error: config key 'batch_size' must be >= 1, got 0"
    assert snapshot(exp) == before


def test_evaluate_never_rewrites_a_finished_run(finished, tmp_path):
    exp = copy_of(finished, tmp_path)
    before = snapshot(exp)
    ok(cli("evaluate", str(exp), "--test_samples", "1"))
    assert {k: v for k, v in snapshot(exp).items() if not k.startswith("eval/")} == before
    other = exp / "eval" / "test_samples-1"
    assert json.loads((other / "results.json").read_text())["eval"]["examples"] == 1
    assert yaml.safe_load((other / "config.yaml").read_text())["data"]["test_samples"] == 1
    assert len((other / "predictions.jsonl").read_text().splitlines()) == 1
    assert "already holds this evaluation; pass --overwrite" in error_line(
        cli("evaluate", str(exp), "--test_samples", "1"))
    assert "evaluate cannot change lora_r (fixed by training)" in error_line(
        cli("evaluate", str(exp), "--set", "lora_r=4"))
    ok(cli("evaluate", str(exp), "--test_samples", "1", "--overwrite"))  # asked for: the run's own files
    assert json.loads((exp / "results.json").read_text())["eval"]["examples"] == 1
    assert yaml.safe_load((exp / "config.yaml").read_text())["data"]["test_samples"] == 1  # still agree


def test_evaluate_repairs_a_corrupt_results_json(finished, tmp_path):
    exp = copy_of(finished, tmp_path)
    (exp / "results.json").write_text('{"metr')
    proc = ok(cli("evaluate", str(exp)))
    assert "results.json is corrupt; kept as results.json.corrupt" in proc.stderr and "Traceback" not in proc.stderr
    assert (exp / "results.json.corrupt").read_text() == '{"metr'
    fresh, old = (json.loads(p.read_text()) for p in (exp / "results.json", finished / "results.json"))
    assert fresh["metrics"] == old["metrics"] and fresh["train"]["steps"] == 1  # train record kept in model/
    assert (exp / "predictions.jsonl").read_text() == (finished / "predictions.jsonl").read_text()


def test_resume_after_a_kill_during_evaluation_evaluates_the_saved_model(finished, tiny_models, data_dir, tmp_path):
    exp = copy_of(finished, tmp_path)
    (exp / "results.json").unlink()
    (exp / "predictions.jsonl").unlink()
    proc = ok(cli(*T(tiny_models, data_dir, exp, "--resume")))
    assert "training of" in proc.stderr and "had finished; evaluating the saved model" in proc.stderr
    assert snapshot(exp / "model") == snapshot(finished / "model")  # not trained one step more
    results = json.loads((exp / "results.json").read_text())
    assert results["train"]["steps"] == 1
    assert results["metrics"] == json.loads((finished / "results.json").read_text())["metrics"]


def test_sweep_redoes_a_run_whose_results_json_is_corrupt(finished, tiny_models, data_dir, tmp_path):
    root = tmp_path / "sweep"
    shutil.copytree(finished, root / "FIN")
    (root / "FIN" / "results.json").write_text("")
    base = yaml.safe_load((finished / "config.yaml").read_text())
    base.pop("output_dir")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"base": base, "runs": [{"name": "FIN"}]}))
    proc = ok(cli("sweep", str(tmp_path / "g.yaml"), "--output_root", str(root)))
    assert "1 runs: 1 to run, 0 finished" in proc.stdout and "skip" not in proc.stdout
    assert (root / "FIN" / "results.json.corrupt").exists()
    redone = json.loads((root / "FIN" / "results.json").read_text())
    assert redone["metrics"] == json.loads((finished / "results.json").read_text())["metrics"]


BAD_VALUES = [("batch_size", "-3", ">= 1"), ("learning_rate", "-1", "> 0"), ("grad_accum", "0", ">= 1"),
              ("lora_r", "0", ">= 1"), ("eval_batch_size", "0", ">= 1"), ("epochs", "0", "> 0"),
              ("max_source_length", "1", ">= 16"), ("lora_dropout", "1.5", ">= 0 and < 1"),
              ("max_steps", "0", "-1 or >= 1"), ("warmup_ratio", "nan", "finite")]


@pytest.mark.parametrize("key,value,allowed", BAD_VALUES, ids=[k for k, _, _ in BAD_VALUES])
def test_numeric_flags_are_validated_before_anything_is_written(tiny_models, data_dir, tmp_path, key, value, allowed):
    line = error_line(cli(*T(tiny_models, data_dir, tmp_path / "out", f"--{key}", value)))
    assert f"config key '{key}' must be" in line and allowed in line
    assert not (tmp_path / "out").exists()


def test_every_entry_point_validates(finished, tiny_models, data_dir, tmp_path):
    out = tmp_path / "out"
    line = error_line(cli("baseline", "--pretrained_ckpt", str(tiny_models["llama"]), "--data_dir", str(data_dir),
                          "--task", "summarization", "--eval_batch_size", "0", "--output_dir", str(out)))
    assert "config key 'eval_batch_size' must be >= 1, got 0" in line
    exp = copy_of(finished, tmp_path)
    assert "config key 'test_samples' must be >= 1, got 0" in error_line(cli("evaluate", str(exp), "--test_samples", "0"))
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"grid": {"grad_accum": [1, 0]}}))
    line = error_line(cli("sweep", str(tmp_path / "g.yaml"), "--output_root", str(out)))
    assert "grid key 'grad_accum' value 0: config key 'grad_accum' must be >= 1, got 0" in line
    (tmp_path / "c.yaml").write_text("train:\n  epochs: -2\n")
    assert f"{tmp_path / 'c.yaml'}: config key 'epochs' must be > 0" in error_line(
        cli(*T(tiny_models, data_dir, out, "--config", str(tmp_path / "c.yaml"))))
    # in range for the field, but the fine-tuning prompt alone would fill it
    line = error_line(cli(*T(tiny_models, data_dir, out, "--max_source_length", "16")))
    assert "max_source_length 16 leaves no room for the input: the prompt template takes" in line
    assert not out.exists()


def custom(tiny_models, data_dir, out, train, test, *extra):
    args = T(tiny_models, data_dir, out, "--task", "custom", "--train_file", str(train), "--test_file", str(test),
             "--train_samples", "2", *extra)
    return cli(*args)


@pytest.mark.parametrize("name,content,message", [
    ("t.csv", "input,target\nhello,yes\nbye,\n", "t.csv:3: column 'target' has no value"),
    ("t.csv", "input,target\nhello,yes\nbye\n", "t.csv:3: column 'target' has no value"),
    ("t.jsonl", '{"input": "a", "target": "x"}\n\n{"input": "b", "target": null}\n', "t.jsonl:3: column 'target' has no value"),
    ("t.jsonl", '{"input": null, "target": "x"}\n', "t.jsonl:1: column 'input' has no value"),
    ("t.jsonl", b'{"input": "a", "target": "x"}\n{"input": "caf\xe9", "target": "y"}\n',
     "t.jsonl:2: not UTF-8 text (byte 0xe9 at column 15)"),
], ids=["csv-empty-cell", "csv-short-row", "json-null", "json-null-input", "latin-1"])
def test_bad_custom_data_is_refused_with_file_line_and_column(tiny_models, data_dir, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert message in error_line(custom(tiny_models, data_dir, tmp_path / "out", path, path))
    assert not (tmp_path / "out").exists()


def test_custom_csv_with_bom_keeps_ids_and_warns_about_unseen_labels(tiny_models, data_dir, tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_bytes("\ufeffid,input,target\nA7,engine car,autos\nB9,orbit moon,space\n".encode())
    test.write_text("id,input,target\nZ1,vote tax,politics\nZ2,rocket,space\n")
    proc = ok(custom(tiny_models, data_dir, tmp_path / "out", train, test, "--kind", "classification"))
    assert "warning: 1 test label(s) never occur in the train split (politics)" in proc.stderr
    preds = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in preds) == ["Z1", "Z2"]


def test_resume_refuses_a_changed_config_skips_a_truncated_checkpoint_and_keeps_the_clock(
        tiny_models, data_dir, tmp_path):
    out = tmp_path / "run"
    args = T(tiny_models, data_dir, out, "--max_steps", "30", "--save_steps", "2", "--logging_steps", "1")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "llmhub", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    complete = lambda: sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")  # noqa: E731
                              if (p / "trainer_state.json").is_file())
    deadline = time.time() + 240
    while time.time() < deadline and len(complete()) < 2 and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = complete()
    assert len(steps) >= 2 and not (out / "results.json").exists(), steps
    config = (out / "config.yaml").read_bytes()

    line = error_line(cli(*args, "--resume", "--lora_r", "4"))
    assert "with a different config (lora_r: 8 -> 4)" in line
    assert (out / "config.yaml").read_bytes() == config  # the run's config is never rewritten on a resume

    newest, previous = out / "checkpoints" / f"checkpoint-{steps[-1]}", out / "checkpoints" / f"checkpoint-{steps[-2]}"
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    before = json.loads((previous / "trainer_state.json").read_text())["stateful_callbacks"]["ElapsedTime"]
    proc = ok(cli(*args, "--resume"))
    assert (f"warning: {newest.name} cannot be resumed from (adapter_model.safetensors is truncated); "
            f"trying {previous.name}") in proc.stderr
    train = json.loads((out / "results.json").read_text())["train"]
    assert train["steps"] == 30 and train["resumed_from"] == str(previous)
    # training time covers every session: the killed one up to its checkpoint plus the resumed one
    assert train["seconds"] > before["attributes"]["seconds"] > 0
    assert train["tokens_per_second"] == pytest.approx(train["real_tokens"] / train["seconds"], rel=1e-3)
    assert (out / "config.yaml").read_bytes() == config


def test_output_dir_that_is_a_file_and_grid_run_named_dotdot(tiny_models, data_dir, tmp_path):
    (tmp_path / "afile").write_text("keep me\n")
    assert "is a file, not a folder" in error_line(cli(*T(tiny_models, data_dir, tmp_path / "afile")))
    assert (tmp_path / "afile").read_text() == "keep me\n"
    (tmp_path / "g.yaml").write_text(yaml.safe_dump({"runs": [{"name": ".."}]}))
    (tmp_path / "root").mkdir()
    line = error_line(cli("sweep", str(tmp_path / "g.yaml"), "--output_root", str(tmp_path / "root")))
    assert "run name '..' is not a plain folder name" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "g.yaml", "root"]


def test_files_follow_the_umask(finished):
    for name in ("results.json", "config.yaml", "predictions.jsonl", "model/train_stats.json"):
        assert (finished / name).stat().st_mode & 0o777 == 0o664, name  # written under umask 002


def _mount_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _mount_works(), reason="needs unshare -m and mount (a private tmpfs)")
@pytest.mark.parametrize("options,message", [("ro", "Read-only file system"), ("size=24k", "No space left on device")])
def test_read_only_or_full_disk_is_one_line(tiny_models, data_dir, tmp_path, options, message):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    args = " ".join(f"'{a}'" for a in T(tiny_models, data_dir, mnt / "out"))
    script = f"mount -t tmpfs -o {options} tmpfs '{mnt}' && cd '{ROOT}' && exec '{sys.executable}' -m llmhub {args}"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    # a progress bar may leave the cursor mid-line: the error starts at "error: " all the same
    lines = [ln[ln.index("error: "):] for ln in proc.stderr.splitlines() if "error: " in ln]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert message in lines[0]
