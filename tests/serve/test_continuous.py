"""`--mode continuous`: transformers' continuous batching behind our server (real uvicorn process,
tiny trained LoRA experiment). Answers equal evaluation's; a request joins a running batch instead
of waiting for it; greedy-only limits are refused by name; a dropped stream frees its pages."""
from __future__ import annotations

import concurrent.futures as cf
import json
import time

import httpx
import pytest

from llmhub.serve.process import ServerProcess
from llmhub.experiment import evaluate_experiment
from test_server import eval_rows, post, scrape, trained_experiment

PROMPT = "### Dialogue: Anna: are you coming to lunch?\nBen: yes\n### Summary:"


@pytest.fixture(scope="module")
def exp(tmp_path_factory, tiny_models, data_dir):
    # fp32: the continuous engine's batches (other shapes, paged attention) must not flip a bf16
    # near-tie of this random tiny model (CI once saw one of four answers differ in bf16)
    out = trained_experiment(tmp_path_factory.mktemp("cb"), tiny_models["llama"], data_dir, torch_dtype="float32")
    evaluate_experiment(out)
    return out


@pytest.fixture(scope="module")
def server(exp):
    args = ["--experiment_dir", str(exp), "--mode", "continuous", "--max_batch_size", "8",
            "--max_new_tokens_limit", "5000", "--kv_cache_tokens", "8192"]
    with ServerProcess(args) as srv:
        yield srv


def test_predict_equals_evaluation_in_parallel(server, exp):
    rows = eval_rows(exp)
    with cf.ThreadPoolExecutor(len(rows)) as pool:
        answers = list(pool.map(lambda r: post(server, "/predict", json={"prompt": r["input"]}), rows))
    assert [a.json()["prediction"] for a in answers] == [r["expected"] for r in rows]
    assert httpx.get(server.url + "/health").json()["mode"] == "continuous"


def test_v1_is_greedy_streams_and_stops(server, exp):
    name = exp.resolve().name
    whole = post(server, "/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 12}).json()
    text = whole["choices"][0]["text"]
    with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                      json={"model": name, "prompt": PROMPT, "max_tokens": 12, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events) == text
    stop = text.strip()[2:5]
    cut = post(server, "/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 12, "stop": stop}).json()
    assert cut["choices"][0]["text"] == text[: text.index(stop)] and cut["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("extra", [{"temperature": 0.7}, {"n": 2}, {"seed": 1}])
def test_sampling_is_refused_by_name(server, exp, extra):
    r = post(server, "/v1/completions", json={"model": exp.resolve().name, "prompt": PROMPT, **extra})
    assert r.status_code == 422 and "--mode continuous decodes greedily" in r.json()["error"]["message"]


def test_a_request_joins_the_running_batch(server, exp):
    """A short request finishes while a long one is still streaming: it did not wait for it."""
    name = exp.resolve().name
    long_body = {"model": name, "prompt": PROMPT, "max_tokens": 3000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=long_body, timeout=120) as r:
        lines = r.iter_lines()
        next(line for line in lines if line.startswith("data: {"))  # the long request is decoding
        short = post(server, "/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 3})
        assert short.status_code == 200
        # micro-batching would have answered it after the long batch: here the long one still runs
        assert httpx.get(server.url + "/health").json()["in_flight"] == 1
        rest = [line for line in lines if line.startswith("data: {")]
        finish = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in rest]
    assert finish[-1] == "length" and len(rest) > 10  # the long one kept going after the short one ended


def test_a_dropped_stream_frees_its_pages(server, exp):
    key = ("llmhub_cancelled_choices_total", ())
    before = scrape(server).get(key, 0)
    body = {"model": exp.resolve().name, "prompt": PROMPT, "max_tokens": 5000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as r:
        next(line for line in r.iter_lines() if line.startswith("data: {"))
    deadline = time.monotonic() + 60
    while scrape(server).get(key, 0) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert scrape(server)[key] == before + 1
    assert httpx.get(server.url + "/health").json()["in_flight"] == 0
