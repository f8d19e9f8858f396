"""The inference server as a real uvicorn process on 127.0.0.1 with tiny trained experiments:
answers equal the inference script's, parallel requests share forward passes, bad requests get
one-line 413/422 answers, and the metrics endpoint counts what happened."""
from __future__ import annotations

import concurrent.futures as cf
import json
import time
from pathlib import Path

import httpx
import pytest

from llmhub.serve.process import ServerProcess
from llmhub import data as data_mod
from llmhub.config import RunConfig, apply_overrides, load_yaml
from llmhub.experiment import evaluate_experiment, train_experiment
from llmhub.serve.predictor import Predictor
from test_experiments import tiny_config


def trained_experiment(root: Path, model_dir, data_dir, task="summarization", method="lora", **extra) -> Path:
    """A tiny experiment trained for 3 steps (about 1 s); returns its directory."""
    out = root / f"{task}-{method}"
    train_experiment(tiny_config(model_dir, data_dir, out, task, method, **extra))
    return out


def eval_rows(exp: Path) -> list[dict]:
    """The test rows exactly as evaluation saw them (after any cleaning), with their predictions."""
    cfg = apply_overrides(RunConfig(), load_yaml(exp / "config.yaml"))
    rows = data_mod.load_task(cfg.data, cfg.train.seed, ("test",))["test"]
    preds = {p["id"]: p for p in map(json.loads, (exp / "predictions.jsonl").read_text().splitlines())}
    return [{**r, "expected": preds[r["id"]]["prediction"]} for r in rows]


@pytest.fixture(scope="module")
def summ_exp(tmp_path_factory, tiny_models, data_dir) -> Path:
    return trained_experiment(tmp_path_factory.mktemp("serve"), tiny_models["llama"], data_dir)


@pytest.fixture(scope="module")
def server(summ_exp):
    args = ["--experiment_dir", str(summ_exp), "--mode", "batched", "--max_batch_size", "8",
            "--max_wait_ms", "300", "--max_queue", "64", "--max_input_tokens", "300"]
    with ServerProcess(args) as srv:
        yield srv


def scrape(srv) -> dict:
    """GET /metrics parsed: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(srv.url + "/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def post(srv, path: str, **kw) -> httpx.Response:
    return httpx.post(srv.url + path, timeout=60, **kw)


def test_predict_equals_the_inference_script(server, summ_exp):
    evaluate_experiment(summ_exp)  # what `python -m llmhub evaluate` / *_inference.py run
    rows = eval_rows(summ_exp)
    for row in rows:
        r = post(server, "/predict", json={"prompt": row["input"]})
        assert r.status_code == 200, r.text
        assert r.json()["prediction"] == row["expected"]
        assert r.json()["label"] is None  # summaries name no label
    # TGI's /generate takes the rendered prompt as is and answers the same text.
    p = Predictor.from_experiment(summ_exp)
    prompt = p.render([rows[0]["input"]])[0]
    r = post(server, "/generate", json={"inputs": prompt, "parameters": {"max_new_tokens": p.max_new_tokens}})
    assert r.status_code == 200 and r.json() == {"generated_text": rows[0]["expected"]}


def test_parallel_requests_share_forward_passes(server, summ_exp):
    rows = eval_rows(summ_exp)
    before = httpx.get(server.url + "/health").json()["batches"]
    n = 16
    with cf.ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: post(server, "/predict", json={"prompt": rows[i % len(rows)]["input"]}),
                                range(n)))
    assert [a.status_code for a in answers] == [200] * n
    # Greedy decoding is deterministic and batching must not change an answer.
    assert [a.json()["prediction"] for a in answers] == [rows[i % len(rows)]["expected"] for i in range(n)]
    batches = httpx.get(server.url + "/health").json()["batches"] - before
    # how many passes depends on when the requests arrive; that queued requests share one pass is
    # tested by counts in test_overload_answers_503_at_once_and_loses_nothing
    assert 1 <= batches <= n, f"{n} parallel requests took {batches} forward passes"
    m = scrape(server)
    assert m[("llmhub_requests_total", (("code", "200"), ("endpoint", "predict")))] >= n
    assert m[("llmhub_batch_size_count", ())] >= batches
    assert m[("llmhub_request_latency_seconds_count", (("endpoint", "predict"),))] >= n


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 422, "not valid JSON"),
    (b"[1, 2]", 422, "JSON object"),
    (b"{}", 422, "missing field 'prompt'"),
    (b'{"prompt": ""}', 422, "empty"),
    (b'{"prompt": "   "}', 422, "empty"),
    (b'{"prompt": 42}', 422, "must be a string"),
    (b'{"prompt": ["a"]}', 422, "must be a string"),
    (b'{"prompt": "hi", "max_new_tokens": 100000}', 422, "allowed: 1 to 256"),
    (b'{"prompt": "hi", "max_new_tokens": "5"}', 422, "must be an integer"),
    (b'{"prompt": "hi", "max_new_tokens": 0}', 422, "allowed: 1 to 256"),
    (json.dumps({"prompt": "word " * 2000}).encode(), 413, "the limit is 300 tokens"),
    (b"x" * 1_000_001, 413, "the limit is 1000000 bytes"),
])
def test_bad_predict_requests(server, body, status, words):
    r = post(server, "/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


@pytest.mark.parametrize("body, status, words", [
    ({"prompt": "hi"}, 422, "missing field 'inputs'"),
    ({"inputs": "hi", "parameters": []}, 422, "'parameters' must be an object"),
    ({"inputs": "hi", "parameters": {"do_sample": True}}, 422, "greedily"),
    ({"inputs": "word " * 200}, 413, "the limit is 96 tokens"),  # the experiment's max_source_length
])
def test_bad_generate_requests(server, body, status, words):
    r = post(server, "/generate", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


def test_server_survives_bad_requests(server):
    assert httpx.get(server.url + "/predict").status_code == 405
    assert server.alive()
    health = httpx.get(server.url + "/health-check").json()
    assert health["status"] == "ok" and health["mode"] == "batched" and health["family"] == "causal"


def hold_the_worker(srv, model: str, headers: dict | None = None):
    """A streamed request that decodes until its client hangs up: the model worker is busy with it
    (its first token has arrived) until the returned stream is closed. Queues then fill by count."""
    body = {"model": model, "prompt": "### Dialogue: hi\n### Summary:", "max_tokens": 20000, "temperature": 0,
            "ignore_eos": True, "stream": True}
    stream = httpx.stream("POST", srv.url + "/v1/completions", json=body, headers=headers, timeout=120)
    r = stream.__enter__()
    assert r.status_code == 200
    lines = r.iter_lines()  # kept unfinished: a closed line iterator would hang up at once
    while not ((line := next(lines)).startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]):
        pass
    stream.lines = lines
    return stream


def wait_for_queue(srv, depth: int) -> None:
    deadline = time.monotonic() + 120  # how long the requests take to arrive is not what is tested
    while httpx.get(srv.url + "/health").json()["queue_depth"] < depth:
        assert time.monotonic() < deadline, f"the queued requests never arrived: {httpx.get(srv.url + '/health').json()}"
        time.sleep(0.05)


def test_overload_answers_503_at_once_and_loses_nothing(summ_exp):
    """Driven by counts, not by load: with the worker held and the queue (4 places) full, the next
    request is told 503 + Retry-After; released, the 4 queued ones run as one batch of 3 (the limit)
    and one of 1, each with its own answer."""
    args = ["--experiment_dir", str(summ_exp), "--mode", "batched", "--max_batch_size", "3", "--max_queue", "4",
            "--max_wait_ms", "0", "--max_new_tokens_limit", "20000"]
    rows = eval_rows(summ_exp)
    with ServerProcess(args) as srv, cf.ThreadPoolExecutor(4) as pool:
        held = hold_the_worker(srv, summ_exp.resolve().name)
        queued = [pool.submit(post, srv, "/predict", json={"prompt": rows[i]["input"]}) for i in range(4)]
        wait_for_queue(srv, 4)
        over = post(srv, "/predict", json={"prompt": rows[0]["input"]})
        assert over.status_code == 503 and "overloaded" in over.json()["error"], over.text
        assert int(over.headers["Retry-After"]) >= 1
        assert not any(f.done() for f in queued)
        held.lines.close()
        held.__exit__(None, None, None)  # hang up: the held row ends at its next step
        answers = [f.result() for f in queued]
        assert [a.status_code for a in answers] == [200] * 4
        assert [a.json()["prediction"] for a in answers] == [rows[i]["expected"] for i in range(4)]
        assert srv.alive() and httpx.get(srv.url + "/health").json()["queue_depth"] == 0
        m = scrape(srv)
        assert m[("llmhub_requests_total", (("code", "200"), ("endpoint", "predict")))] == 4
        assert m[("llmhub_requests_total", (("code", "503"), ("endpoint", "predict")))] == 1
        # batches: the held stream (1), then the queue as 3 + 1
        assert m[("llmhub_batch_size_count", ())] == 3 and m[("llmhub_batch_size_sum", ())] == 5


def test_encoder_classifier_is_served(tmp_path, tiny_models, data_dir):
    exp = trained_experiment(tmp_path, tiny_models["bert"], data_dir, task="classification", method="full")
    labels = json.loads((exp / "model" / "labels.json").read_text())
    rows = eval_rows(exp)
    with ServerProcess(["--experiment_dir", str(exp), "--mode", "batched"]) as srv:
        for row in rows[:4]:
            r = post(srv, "/predict", json={"prompt": row["input"]})
            assert r.status_code == 200, r.text
            assert r.json() == {"prediction": row["expected"], "label": row["expected"]}
            assert r.json()["label"] in labels


@pytest.mark.parametrize("arch", ["gemma3", "qwen2"])
def test_gemma3_and_qwen2_are_served(tmp_path, tiny_models, data_dir, arch):
    """The local engine serves the two newer families (adapter unmerged) with the evaluation's answers."""
    exp = trained_experiment(tmp_path, tiny_models[arch], data_dir, learning_rate=3e-3)
    rows = eval_rows(exp)
    with ServerProcess(["--experiment_dir", str(exp)]) as srv:
        for row in rows:
            r = post(srv, "/predict", json={"prompt": row["input"]})
            assert r.status_code == 200 and r.json()["prediction"] == row["expected"], r.text
