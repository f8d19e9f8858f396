"""A `/v1/completions` request stays inside the serving layer: every function of the package it calls,
in every thread (the app's event loop and the batcher's worker), lives in llmhub/serve/ or, called
down, in the engine (llmhub/*.py); none in llmhub/study/, the commands or the thin entry points of
inference/. Layers as tests/test_layers.py defines them."""
from __future__ import annotations

import sys
import threading
from pathlib import Path

from fastapi.testclient import TestClient

from llmhub.serve.app import create_app
from llmhub.serve.predictor import Predictor
from test_layers import PACKAGE, layer, module_name
from test_server import trained_experiment

PROMPT = "### Dialogue: Anna: are you coming to lunch?\nBen: yes\n### Summary:"


def where(filename: str) -> str | None:
    """The layer a source file belongs to, or None outside the repository's own code."""
    path = Path(filename)
    if PACKAGE.parent / "inference" in path.parents:
        return "inference"
    return layer(module_name(path)) if PACKAGE in path.parents else None


def test_completions_request_calls_only_serve_and_engine_code(tmp_path, tiny_models, data_dir):
    exp = trained_experiment(tmp_path, tiny_models["llama"], data_dir, torch_dtype="float32")
    app = create_app(Predictor.from_experiment(exp))
    called: dict[str, set[str]] = {}

    def profile(frame, event, arg):
        if event == "call" and (layer := where(frame.f_code.co_filename)):
            called.setdefault(layer, set()).add(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")

    threading.setprofile(profile)  # threads started from here on: the client's portal, the batcher
    try:
        with TestClient(app) as client:
            model = client.get("/v1/models").json()["data"][0]["id"]
            called.clear()  # start-up is not the request
            sys.setprofile(profile)
            reply = client.post("/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": 4})
            sys.setprofile(None)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["text"] is not None
    assert set(called) <= {"serve", "engine"}, {k: sorted(v) for k, v in called.items()}
    # the trace saw the request's path: the OpenAI handler, the batcher and the engine's decoding
    serve = {name.split(":")[0] for name in called["serve"]}
    assert {"openai_api.py", "front.py", "batcher.py"} <= serve, sorted(serve)
    assert any(name.startswith("generate.py:") for name in called["engine"]), sorted(called["engine"])
