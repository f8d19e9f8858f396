"""inference/ray_serve.py on a local Ray (2 CPUs) with a tiny trained experiment: the deployment
answers like the inference script, batches parallel requests, and refuses bad ones."""
from __future__ import annotations

import concurrent.futures as cf

import httpx
import pytest

from llmhub.serve.process import free_port
from test_server import eval_rows, trained_experiment


@pytest.fixture(scope="module")
def ray_app(tmp_path_factory, tiny_models, data_dir):
    exp = trained_experiment(tmp_path_factory.mktemp("ray"), tiny_models["llama"], data_dir)
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[ray]')")
    # Ray installed: an import or start that fails is a failure of ours, never a skip
    from ray import serve

    from llmhub.cluster import init_ray
    from llmhub.serve.ray_serve import build_app

    ray = init_ray(init_kwargs={"num_cpus": 2})

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(str(exp), max_batch_size=8, batch_wait_ms=300, threads=1, cpus_per_replica=1),
              name="llmhub", route_prefix="/")
    yield f"http://127.0.0.1:{port}", exp
    serve.shutdown()
    ray.shutdown()


def test_ray_deployment_answers_and_batches(ray_app):
    url, exp = ray_app
    rows = eval_rows(exp)
    n = 8
    with cf.ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda i: httpx.post(url + "/predict", json={"prompt": rows[i % len(rows)]["input"]},
                                                     timeout=120), range(n)))
    assert [a.status_code for a in answers] == [200] * n, answers[0].text
    assert [a.json()["prediction"] for a in answers] == [rows[i % len(rows)]["expected"] for i in range(n)]
    health = httpx.get(url + "/health", timeout=30).json()
    # how many batches 8 requests make depends on when they arrive (the machine's load): not asserted
    assert health["mode"] == "ray" and 1 <= health["batches"] <= n
    r = httpx.post(url + "/predict", json={"prompt": ""}, timeout=30)
    assert r.status_code == 422 and "empty" in r.json()["error"]
    # TGI's route: the rendered prompt as is, answered with evaluation's own text
    from llmhub.serve.predictor import Predictor

    p = Predictor.from_experiment(exp)
    r = httpx.post(url + "/generate", json={"inputs": p.render([rows[0]["input"]])[0],
                                            "parameters": {"max_new_tokens": p.max_new_tokens}}, timeout=60)
    assert r.status_code == 200 and r.json() == {"generated_text": rows[0]["expected"]}, r.text
