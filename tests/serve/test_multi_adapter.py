"""Many adapters, one base: `--adapter name=EXP_DIR` serves several LoRA experiments on one copy of
the base model, chosen per request by `model`. Requests for different adapters share one batch
(peft's `adapter_names=`) and each gets the answer its adapter gives when served alone; the vllm
engine passes the names through, so the same server works in front of vLLM's LoRA modules."""
from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

import httpx
import pytest

from llmhub.serve.process import ServerProcess
from llmhub.serve.vllm_server import build_parser, command
from test_server import post, trained_experiment

DIALOGUE = "Anna: are you coming to the party?\nBen: yes, see you at 8"
PROMPT = "### Dialogue: Anna: lunch?\nBen: yes\n### Summary:"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_models, data_dir) -> dict[str, Path]:
    """Two adapters of one base that answer differently: a summarizer and a classifier."""
    root = tmp_path_factory.mktemp("adapters")
    # fp32: a mixed batch must not flip a bf16 near-tie of this random tiny model
    return {name: trained_experiment(root, tiny_models["llama"], data_dir, task=task, learning_rate=0.05,
                                     torch_dtype="float32")
            for name, task in (("a", "summarization"), ("b", "classification"))}


def v1(srv, model: str, prompt: str = PROMPT) -> str:
    r = post(srv, "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_two_adapters_in_one_batch_answer_as_alone(adapters, tiny_models):
    base = Path(tiny_models["llama"]).resolve().name
    args = ["--model", str(tiny_models["llama"]), "--task", "summarization", "--mode", "batched",
            "--max_batch_size", "4", "--max_wait_ms", "3000"]
    for name, exp in adapters.items():
        args += ["--adapter", f"{name}={exp}"]
    alone = {}
    for name, exp in adapters.items():
        with ServerProcess(["--experiment_dir", str(exp)]) as srv:
            own = exp.resolve().name
            alone[name] = (post(srv, "/predict", json={"prompt": DIALOGUE}).json(), v1(srv, own))
    assert alone["a"][1] != alone["b"][1], "the two adapters should answer the same prompt differently"
    with ServerProcess(args) as srv:
        models = [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]]
        assert models == [base, "a", "b"]
        for endpoint, call in (("/predict", lambda m: post(srv, "/predict", json={"prompt": DIALOGUE, "model": m}).json()),
                               ("/v1/completions", lambda m: v1(srv, m))):
            before = httpx.get(srv.url + "/health").json()["batches"]
            with cf.ThreadPoolExecutor(4) as pool:
                got = list(pool.map(call, ["a", "b", "a", "b"]))
            assert httpx.get(srv.url + "/health").json()["batches"] - before == 1, f"{endpoint}: not one batch"
            k = 0 if endpoint == "/predict" else 1
            assert got == [alone["a"][k], alone["b"][k]] * 2, endpoint
        r = post(srv, "/predict", json={"prompt": DIALOGUE, "model": "c"})
        assert r.status_code == 404 and "allowed: " + ", ".join(models) in r.json()["error"]


def test_vllm_engine_routes_by_name(adapters):
    """The front (no weights) passes adapter names to an upstream serving the same names."""
    a, b = adapters["a"], adapters["b"]
    with ServerProcess(["--experiment_dir", str(a), "--adapter", f"b={b}"]) as upstream, \
            ServerProcess(["--experiment_dir", str(a), "--adapter", f"b={b}", "--engine", "vllm",
                           "--vllm_url", upstream.url]) as front:
        for model in (a.resolve().name, "b"):
            assert v1(front, model) == v1(upstream, model)
            body = {"prompt": DIALOGUE, "model": model}
            assert post(front, "/predict", json=body).json() == post(upstream, "/predict", json=body).json()


def test_adapter_errors_are_one_line(adapters, tiny_models, tmp_path):
    import subprocess
    import sys

    from llmhub.serve.process import SERVER

    cases = [(["--experiment_dir", str(adapters["a"]), "--adapter", "b"], "expected NAME=EXPERIMENT_DIR"),
             (["--experiment_dir", str(adapters["a"]), "--adapter", f"b={adapters['b']}", "--adapter",
               f"b={adapters['b']}"], "given twice"),
             (["--experiment_dir", str(adapters["a"]), "--adapter", f"b={tmp_path}"], "is not an experiment directory")]
    for args, words in cases:
        p = subprocess.run([*SERVER, *args, "--port", "1"], capture_output=True, text=True,
                           timeout=120)
        last = p.stderr.strip().splitlines()[-1]
        assert p.returncode != 0 and last.startswith("error:") and words in last, p.stderr[-1500:]


def test_vllm_launch_serves_every_adapter(adapters):
    a, b = adapters["a"], adapters["b"]
    cmd = command(build_parser().parse_args(["--experiment_dir", str(a), "--adapter", f"b={b}"]))
    assert cmd[cmd.index("--lora-modules") + 1:] == [f"{a.resolve().name}={(a / 'model').resolve()}",
                                                     f"b={(b / 'model').resolve()}"]
    assert cmd[cmd.index("--max-loras") + 1] == "2"
