"""`--engine vllm`: our server as the front of an OpenAI-compatible upstream. The upstream here is our
own server's /v1 (a real process, runs everywhere); tests/serve/test_vllm.py puts vLLM itself behind it.
The front keeps what is ours: templates and label matching on /predict, limits, the bounded queue
(503 + Retry-After), metrics; a missing upstream is a 503 that names it, not a hang."""
from __future__ import annotations

import concurrent.futures as cf
import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from llmhub.serve.process import ServerProcess, free_port
from test_server import post, scrape, trained_experiment

DIALOGUES = ["Anna: are you coming to lunch?\nBen: yes, see you at 1", "Cleo: the exam?\nDan: ok\nCleo: ok"]


@pytest.fixture(scope="module")
def exps(tmp_path_factory, tiny_models, data_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("front")
    return {task: trained_experiment(root, tiny_models["llama"], data_dir, task=task)
            for task in ("summarization", "classification")}


@pytest.fixture(scope="module")
def upstream(exps):
    with ServerProcess(["--experiment_dir", str(exps["summarization"]), "--max_new_tokens_limit", "20000"]) as srv:
        yield srv


def front_args(exp: Path, url: str, *extra: str) -> list[str]:
    return ["--experiment_dir", str(exp), "--engine", "vllm", "--vllm_url", url, *extra]


def test_front_answers_as_the_local_engine(exps, upstream):
    exp = exps["summarization"]
    with ServerProcess(front_args(exp, upstream.url)) as front:
        assert httpx.get(front.url + "/health").json()["engine"] == "vllm"
        for text in DIALOGUES:  # the front renders the template, the upstream decodes
            assert post(front, "/predict", json={"prompt": text}).json() == \
                post(upstream, "/predict", json={"prompt": text}).json()
        ours, theirs = (openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0) for s in (front, upstream))
        ask = dict(model=exp.resolve().name, prompt="### Dialogue: hi\n### Summary:", max_tokens=10, n=2, seed=3)
        a, b = ours.completions.create(**ask), theirs.completions.create(**ask)
        assert [c.text for c in a.choices] == [c.text for c in b.choices] and a.usage == b.usage
        chunks = list(ours.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
        for i in range(2):
            assert "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == i) == a.choices[i].text
        assert chunks[-1].usage.completion_tokens == a.usage.completion_tokens
        m = scrape(front)
        assert m[("llmhub_requests_total", (("code", "200"), ("endpoint", "predict")))] == len(DIALOGUES)
        assert m[("llmhub_output_tokens_total", ())] > 0


def test_front_matches_labels(exps):
    exp = exps["classification"]
    post_text = "From: x@y.z\nSubject: hi\n\norbit rocket nasa launch"
    with ServerProcess(["--experiment_dir", str(exp)]) as local, \
            ServerProcess(front_args(exp, local.url)) as front:
        here, there = (post(s, "/predict", json={"prompt": post_text}).json() for s in (front, local))
        assert here == there and set(here) == {"prediction", "label"}


def test_front_queue_is_bounded(exps, upstream):
    args = front_args(exps["summarization"], upstream.url, "--max_batch_size", "1", "--max_queue", "1")
    body = {"model": exps["summarization"].resolve().name, "prompt": "hi", "max_tokens": 200, "ignore_eos": True}
    with ServerProcess(args) as front:
        with cf.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post(front, "/v1/completions", json=body), range(6)))
        full = [a for a in answers if a.status_code == 503]
        assert full and all(a.status_code in (200, 503) for a in answers), [a.text for a in answers]
        assert all(int(a.headers["Retry-After"]) >= 1 and "1 requests queued (limit 1)" in a.json()["error"]["message"]
                   for a in full)


def test_upstream_down_is_a_clear_503(exps):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with ServerProcess(front_args(exps["summarization"], url), ready=(503,)) as front:
        health = httpx.get(front.url + "/health")
        assert health.status_code == 503 and url in health.json()["error"]
        r = post(front, "/predict", json={"prompt": "hi"})
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert f"the vLLM server at {url} is not reachable" in r.json()["error"]
        body = {"model": exps["summarization"].resolve().name, "prompt": "hi", "stream": True}
        r = post(front, "/v1/completions", json=body)  # a stream fails before its status line
        assert r.status_code == 503 and "not reachable" in r.json()["error"]["message"]


def test_a_dropped_stream_stops_upstream(exps, upstream):
    name = exps["summarization"].resolve().name
    key = ("llmhub_cancelled_choices_total", ())
    before = scrape(upstream).get(key, 0)
    with ServerProcess(front_args(exps["summarization"], upstream.url, "--max_new_tokens_limit", "20000")) as front:
        body = {"model": name, "prompt": "hi", "max_tokens": 20000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", front.url + "/v1/completions", json=body, timeout=60) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                    break
        deadline = time.monotonic() + 120
        while scrape(upstream).get(key, 0) <= before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scrape(upstream)[key] == before + 1
        assert httpx.get(front.url + "/health").json()["in_flight"] == 0
