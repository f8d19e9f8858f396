"""The server against a hostile client: clients that disconnect, bodies that lie about their size or
never end, JSON no tokenizer can read, wrong types, a full queue, a truncated adapter, a missing key.
Real uvicorn processes, raw sockets where an HTTP client would be too polite."""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from llmhub.serve.app import create_app
from llmhub.serve.batcher import MicroBatcher
from llmhub.serve.process import SERVER, ServerProcess
from llmhub.serve.predictor import Predictor
from test_server import hold_the_worker, post, scrape, trained_experiment, wait_for_queue


@pytest.fixture(scope="module")
def summ_exp(tmp_path_factory, tiny_models, data_dir) -> Path:
    return trained_experiment(tmp_path_factory.mktemp("hostile"), tiny_models["llama"], data_dir)


@pytest.fixture(scope="module")
def server(summ_exp):
    with ServerProcess(["--experiment_dir", str(summ_exp), "--mode", "batched", "--max_wait_ms", "50"]) as srv:
        yield srv


def raw(srv, head: str, body: bytes = b"", close_after: float | None = None, read_timeout: float = 15) -> bytes:
    """Send a hand-written request; with close_after, hang up that many seconds later without reading."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    try:
        s.sendall(head.encode() + b"\r\n" + body)
        if close_after is not None:
            time.sleep(close_after)
            return b""
        s.settimeout(read_timeout)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            part = s.recv(65536)  # headers and body may arrive in separate packets
            if not part:
                break
            answer += part
        return answer
    finally:
        s.close()


def _length(answer: bytes) -> int:
    found = re.search(rb"(?im)^content-length: *(\d+)", answer.split(b"\r\n\r\n", 1)[0])
    return int(found.group(1)) if found else 0


def head(path: str, length: int | None, extra: str = "") -> str:
    size = f"Content-Length: {length}\r\n" if length is not None else ""
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{size}{extra}"


def test_a_client_that_hangs_up_does_not_stop_the_batcher(server):
    body = json.dumps({"prompt": "Anna: are you coming?\nBen: yes"}).encode()
    for _ in range(3):  # the request is queued, then its client leaves while it waits for companions
        raw(server, head("/predict", len(body)), body, close_after=0.005)
        time.sleep(0.3)
    r = post(server, "/predict", json={"prompt": "Anna: lunch?\nBen: sure"})
    assert r.status_code == 200 and isinstance(r.json()["prediction"], str)
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    m = scrape(server)
    assert m[("llmhub_requests_total", (("code", "499"), ("endpoint", "predict")))] >= 1


def test_the_worker_survives_any_exception_in_a_batch():
    calls = []

    def on_batch(size, seconds, waits):  # fails once, outside the model call
        calls.append(size)
        if len(calls) == 1:
            raise ValueError("metrics backend down")

    async def scenario():
        b = MicroBatcher(lambda prompts, budgets: [p.upper() for p in prompts], 4, 0, 8, on_batch)
        b.start()
        with pytest.raises(ValueError, match="metrics backend down"):
            await asyncio.wait_for(b.submit("a", 1, 1), 5)
        second = await asyncio.wait_for(b.submit("b", 1, 1), 5)  # before the fix: waits forever
        alive = b.alive
        await b.stop()
        return second, alive

    assert asyncio.run(scenario()) == ("B", True)


def test_health_is_503_when_the_worker_is_dead(summ_exp):
    predictor = Predictor.from_experiment(summ_exp)
    with TestClient(create_app(predictor)) as client:
        assert client.get("/health").status_code == 200
        client.app.state.batcher._worker.cancel()  # what an uncaught BaseException would leave
        for _ in range(50):
            if not client.app.state.batcher.alive:
                break
            time.sleep(0.02)
        r = client.get("/health")
        assert r.status_code == 503 and "worker has stopped" in r.json()["error"]


@pytest.mark.parametrize("path, body", [
    ("/predict", b'{"prompt": "\\ud800"}'),
    ("/generate", b'{"inputs": "hi \\udfff there"}'),
    ("/predict", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("/predict", b"[" * 100_000 + b"]" * 100_000),
])
def test_unreadable_json_is_a_client_error(server, path, body):
    r = post(server, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "error" in r.json() and "Traceback" not in r.text


def test_a_huge_body_is_refused_on_its_content_length(server):
    # 300 MB announced, nothing sent: the answer must come without waiting for (or reading) the body.
    answer = raw(server, head("/predict", 300_000_000), read_timeout=15)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the limit is 1000000 bytes" in answer


def test_a_streamed_body_is_cut_at_the_limit(server):
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(17)) + b"0\r\n\r\n"  # 1.1 MB
    answer = raw(server, head("/predict", None, "Transfer-Encoding: chunked\r\n"), body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_a_disconnect_mid_body_is_not_a_server_error(server):
    key500 = ("llmhub_requests_total", (("code", "500"), ("endpoint", "predict")))
    before = scrape(server).get(key500, 0)
    raw(server, head("/predict", 1000), b'{"prompt": "half', close_after=0.05)
    time.sleep(1.0)
    assert scrape(server).get(key500, 0) == before
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_500_does_not_echo_the_exception(summ_exp, caplog):
    predictor = Predictor.from_experiment(summ_exp)

    def broken(prompts, budgets):  # a model failure whose message names a private path
        raise RuntimeError("cannot read /srv/secret/weights.bin")

    predictor.complete = broken
    with TestClient(create_app(predictor)) as client:
        r = client.post("/predict", json={"prompt": "hello"})
        assert r.status_code == 500
        assert "secret" not in r.text and "RuntimeError" not in r.text
        request_id = r.json()["request_id"]
        assert request_id in r.json()["error"]
        assert client.get("/health").status_code == 200  # the worker lives on
    assert any(request_id in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("body, words", [
    ({"inputs": "hi", "parameters": {"do_sample": "false"}}, "must be a boolean"),
    ({"inputs": "hi", "parameters": {"do_sample": 0}}, "must be a boolean"),
])
def test_do_sample_must_be_a_boolean(server, body, words):
    r = post(server, "/generate", json=body)
    assert r.status_code == 422 and words in r.json()["error"], r.text
    ok = post(server, "/generate", json={"inputs": "hi", "parameters": {"do_sample": False, "max_new_tokens": 2}})
    assert ok.status_code == 200, ok.text


def test_openapi_declares_bodies_and_errors(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, model, field in (("/predict", "PredictRequest", "prompt"), ("/generate", "GenerateRequest", "inputs")):
        op = spec["paths"][path]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}"
        assert field in schemas[model]["required"]
        assert {"200", "413", "422", "503", "500"} <= set(op["responses"])
    assert schemas["GenerateParameters"]["properties"]["do_sample"]
    assert "503" in spec["paths"]["/health"]["get"]["responses"]


def test_full_queue_message_and_api_key(summ_exp):
    """The key guards every endpoint but the probes; a full queue, driven by count (the worker held by
    a stream, 4 requests queued), answers 503 saying how many are queued and the limit."""
    key = {"Authorization": "Bearer s3cret"}
    args = ["--experiment_dir", str(summ_exp), "--mode", "naive", "--max_queue", "4", "--max_new_tokens_limit", "20000"]
    with ServerProcess(args, env={"LLMHUB_API_KEY": "s3cret"}) as srv, cf.ThreadPoolExecutor(4) as pool:
        assert post(srv, "/predict", json={"prompt": "hi"}).status_code == 401
        assert post(srv, "/predict", json={"prompt": "hi"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert httpx.get(srv.url + "/metrics").status_code == 401
        assert httpx.get(srv.url + "/health").status_code == 200  # probes carry no key
        held = hold_the_worker(srv, summ_exp.resolve().name, headers=key)
        queued = [pool.submit(post, srv, "/predict", json={"prompt": "hi"}, headers=key) for _ in range(4)]
        wait_for_queue(srv, 4)
        full = post(srv, "/predict", json={"prompt": "hi"}, headers=key)
        assert full.status_code == 503 and "4 requests queued (limit 4)" in full.json()["error"], full.text
        held.lines.close()
        held.__exit__(None, None, None)
        assert [f.result().status_code for f in queued] == [200] * 4


def test_a_truncated_adapter_is_one_line_at_start(summ_exp, tmp_path):
    exp = tmp_path / "cut"
    shutil.copytree(summ_exp, exp)
    weights = next((exp / "model").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    p = subprocess.run([*SERVER, "--experiment_dir", str(exp), "--port", "1"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()  # transformers' loading progress may come first
    assert "Traceback" not in p.stderr and [ln for ln in lines if "error" in ln.lower()] == lines[-1:], p.stderr[-2000:]
    assert lines[-1].startswith("error:") and "truncated" in lines[-1]
