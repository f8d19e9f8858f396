"""Bad input: one clear line on stderr, exit status 2, nothing half-written left behind."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def error_line(proc) -> str:
    """The one line the CLI printed for the error (libraries may log their own warnings first)."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture()
def base_args(tiny_models, data_dir, tmp_path):
    return ["-m", "llmhub", "train", "--pretrained_ckpt", str(tiny_models["llama"]), "--data_dir", str(data_dir),
            "--task", "summarization", "--train_samples", "8", "--test_samples", "2", "--max_steps", "1",
            "--batch_size", "4", "--max_new_tokens", "4", "--output_dir", str(tmp_path / "out")]


@pytest.mark.parametrize("extra,message", [
    (["--pretrained_ckpt", "no-such-model"], "unknown model 'no-such-model'"),
    (["--method", "lora2"], "unknown method 'lora2'; allowed: lora, qlora, dora, prefix, prompt, ia3, full"),
    (["--task", "translation"], "unknown task 'translation'"),
    (["--data_dir", "/nonexistent/data"], "data directory not found"),
    (["--train_sample_fraction", "1.5", "--train_samples", "null"], "config key 'train_sample_fraction' must be > 0 and <= 1, got 1.5"),
    (["--train_sample_fraction", "0"], None),
    (["--lora_r", "abc"], "config key 'lora_r' must be an integer"),
    (["--set", "lora_rank=4"], "unknown config key 'lora_rank'"),
    (["--optimizer", "sgd"], "unknown optimizer 'sgd'"),
    (["--eval_engine", "tgi"], "unknown eval_engine 'tgi'; allowed: transformers, vllm"),
    (["--eval_engine", "vllm", "--method", "prefix"],
     "--eval_engine vllm evaluates LoRA and IA3 adapters (merged) and fully fine-tuned models, not method 'prefix'"),
])
def test_bad_train_input(base_args, tmp_path, extra, message):
    args = list(base_args)
    if "--train_sample_fraction" in extra and message is None:
        args[args.index("--train_samples"):args.index("--train_samples") + 2] = []
        message = "config key 'train_sample_fraction' must be > 0 and <= 1, got 0"
    elif "--train_samples" in extra:
        i = args.index("--train_samples")
        del args[i:i + 2]
        extra = extra[:2]
    proc = run(*args, *extra)
    assert proc.returncode == 2, proc.stderr
    assert message in error_line(proc)
    if "sgd" not in extra:  # everything up to the optimiser is validated before writing
        assert not (tmp_path / "out").exists()


def test_vllm_engine_checked_before_training(base_args, tiny_models, tmp_path):
    """Without vLLM's environment, or for a model family vLLM does not run, a run asking to be
    evaluated by vLLM fails before it trains."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LLMHUB_VLLM_PYTHON": str(tmp_path / "no-python")}
    proc = subprocess.run([sys.executable, *base_args, "--eval_engine", "vllm"], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2 and f"--eval_engine vllm: no python at {tmp_path / 'no-python'}" in error_line(proc)
    t5 = [a if a != str(tiny_models["llama"]) else str(tiny_models["t5"]) for a in base_args]
    proc = run(*t5, "--eval_engine", "vllm")
    assert proc.returncode == 2 and "--eval_engine vllm evaluates causal (decoder-only) models" in error_line(proc)
    assert not (tmp_path / "out").exists()


def test_python_without_vllm_refused_before_training(base_args, tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LLMHUB_VLLM_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, *base_args, "--eval_engine", "vllm"], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert error_line(proc) == f"error: --eval_engine vllm: {sys.executable} cannot import vllm; create vLLM's " \
                               "virtualenv with `make -C inference/vllm venv` or set LLMHUB_VLLM_PYTHON"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,message", [
    ("", "empty"),
    (None, "data file not found"),
    ('{"input": "a", "target": "b"}\n{"input": \n', "data.jsonl:2: malformed JSON"),
    ('{"input": "a"}\n', "no column 'target'"),
])
def test_bad_custom_data_file(base_args, tmp_path, content, message):
    data = tmp_path / "data.jsonl"
    if content is not None:
        data.write_text(content)
    args = [a if a != "summarization" else "custom" for a in base_args]
    proc = run(*args, "--train_file", str(data), "--test_file", str(data))
    assert proc.returncode == 2 and message in error_line(proc)
    assert not (tmp_path / "out").exists()


def test_finished_run_is_not_clobbered(base_args, tmp_path):
    first = run(*base_args)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "out" / "results.json").read_text()
    again = run(*base_args)
    assert again.returncode == 2 and "already holds a finished run" in error_line(again)
    assert (tmp_path / "out" / "results.json").read_text() == before
    assert run(*base_args, "--overwrite").returncode == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["train"]["steps"] == 1


def test_unfinished_run_needs_resume(base_args, tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    proc = run(*base_args)
    assert proc.returncode == 2 and "--resume" in error_line(proc)


def test_scripts_have_help():
    for script in ["flan-t5/flan_classification.py", "llama2/llama2_summarization_inference.py"]:
        proc = run(script, "--help")
        assert proc.returncode == 0 and "usage" in proc.stdout
