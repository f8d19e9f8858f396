"""vLLM's CPU build serving a model through inference/vllm/launch.py, compared with transformers'
greedy decoding in fp32. Needs vLLM's own virtualenv (make -C inference/vllm venv)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import httpx
import pytest

from inference.launch import free_port
from inference.vllm.launch import VENV_PYTHON, command, build_parser

pytestmark = pytest.mark.skipif(not VENV_PYTHON.is_file(),
                                reason="vLLM's virtualenv is absent (make -C inference/vllm venv)")
LAUNCH = os.path.join(os.path.dirname(__file__), "..", "inference", "vllm", "launch.py")


def test_lora_experiment_command_reads_rank(tmp_path):
    exp = tmp_path / "exp"
    (exp / "model").mkdir(parents=True)
    (exp / "config.yaml").write_text(f"model:\n  pretrained_ckpt: {tmp_path}\n")
    (exp / "model" / "adapter_config.json").write_text('{"r": 12, "base_model_name_or_path": "x"}')
    cmd = command(build_parser().parse_args(["--experiment_dir", str(exp)]))
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"
    assert cmd[cmd.index("--lora-modules") + 1] == f"exp={(exp / 'model').resolve()}"


def test_vllm_answers_like_transformers_in_fp32():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmhub.models import resolve_path

    folder = resolve_path("smollm2-135m")
    port = free_port()
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, LAUNCH, "--model", "smollm2-135m", "--dtype", "float32",
                             "--port", str(port), "--max_model_len", "512", "--name", "smol"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            assert proc.poll() is None, open(log.name).read()[-3000:]
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["smol"]
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype="float32")
        for prompt in ("Summarize: Anna is late. Ben waits.\nSummary:", "The capital of France is"):
            r = httpx.post(url + "/v1/completions", timeout=120, json={
                "model": "smol", "prompt": prompt, "max_tokens": 8, "temperature": 0})
            assert r.status_code == 200, r.text
            ids = tok(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
            expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert r.json()["choices"][0]["text"] == expected
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
