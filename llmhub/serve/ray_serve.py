"""The same predictor as a Ray Serve deployment: request batching per replica, N replicas, and a
Ray cluster underneath to spread them over machines.

  python inference/ray_serve.py --experiment_dir experiments/llama2-summ --num_replicas 2 --port 8000
  python inference/ray_serve.py --model smollm2-135m --task summarization --address auto  # join a cluster

Endpoints and answers are those of inference/server.py: POST /predict {"prompt"} (template applied),
POST /generate (TGI's contract), GET /health. Ray Serve routes each request to a replica; each
replica gathers up to --max_batch_size requests or waits --batch_wait_ms (Serve's @serve.batch) and
runs them as one greedy `generate` call in a worker thread. Beyond --max_queue waiting requests Ray
Serve itself answers 503. On a GPU cluster give each replica a GPU with --gpus_per_replica 1.
"""
# No `from __future__ import annotations` here: Serve's ingress copies the methods into FastAPI
# routes, which must see `Request` as a class, not a string, or every call is a 422.
import argparse
import asyncio
import copy
import sys
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from . import endpoints, schema

api = FastAPI(title="llmhub on Ray Serve", docs_url=None, redoc_url=None)


@serve.deployment
@serve.ingress(api)
class RayPredictor:
    def __init__(self, experiment_dir, model, overrides: dict, max_batch_size: int,
                 batch_wait_ms: float, threads: int, limits: schema.Limits):
        import torch

        from .predictor import Predictor

        torch.set_num_threads(threads)
        self.p = Predictor.load(experiment_dir, model, overrides)
        self.front_tok = copy.deepcopy(self.p.tokenizer)  # the event loop's own (thread safety)
        self.limits = limits
        self.batches = 0
        self.batch.set_max_batch_size(max_batch_size)
        self.batch.set_batch_wait_timeout_s(batch_wait_ms / 1000)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.05)
    async def batch(self, items: list[tuple[str, int]]) -> list[str]:
        self.batches += 1
        loop = asyncio.get_running_loop()  # the model runs in a thread; the replica keeps accepting
        return await loop.run_in_executor(None, self.p.complete, [i[0] for i in items], [i[1] for i in items])

    async def _serve(self, request: Request, endpoint: str) -> JSONResponse:
        try:
            body = schema.parse_json(await request.body(), self.limits)
            work = endpoints.ENDPOINTS[endpoint](body, self.limits, self.p, self.front_tok)
            return JSONResponse(work.respond(await self.batch((work.prompt, work.budget))))
        except schema.ApiError as e:
            return JSONResponse(e.body(), status_code=e.status)

    @api.post("/predict")
    async def predict(self, request: Request):
        return await self._serve(request, "predict")

    @api.post("/generate")
    async def generate(self, request: Request):
        return await self._serve(request, "generate")

    @api.get("/health")
    async def health(self):
        return {"status": "ok", "mode": "ray", "batches": self.batches, "time": time.time(), **self.p.describe()}


def build_app(experiment_dir=None, model=None, overrides=None,
              num_replicas: int = 1, max_batch_size: int = 16, batch_wait_ms: float = 50.0, max_queue: int = 128,
              threads: int = 2, cpus_per_replica: float = 1.0, gpus_per_replica: float = 0.0,
              limits: schema.Limits = schema.Limits()):
    """The bound Serve application (pass to serve.run)."""
    return RayPredictor.options(
        num_replicas=num_replicas,
        # Serve's default of 5 concurrent requests per replica would cap every batch at 5.
        max_ongoing_requests=max(2 * max_batch_size, 8),
        max_queued_requests=max_queue,  # beyond it Serve answers 503 at once
        ray_actor_options={"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica},
    ).bind(experiment_dir, model, overrides or {}, max_batch_size, batch_wait_ms, threads, limits)


def main(argv: list[str] | None = None) -> None:
    from ..errors import HubError, run

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment_dir", help="a trained experiment (config.yaml + model/)")
    p.add_argument("--model", help="a model folder, registry name or merged model (with --task)")
    p.add_argument("--task", help="with --model: classification | summarization | dialogsum")
    p.add_argument("--max_new_tokens", type=int, help="default tokens generated per request")
    p.add_argument("--num_replicas", type=int, default=1, help="model copies (default: %(default)s)")
    p.add_argument("--max_batch_size", type=int, default=16, help="requests per batch (default: %(default)s)")
    p.add_argument("--batch_wait_ms", type=float, default=50, help="ms to wait for a batch (default: %(default)s)")
    p.add_argument("--max_queue", type=int, default=128, help="waiting requests before 503 (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per replica (default: %(default)s)")
    p.add_argument("--cpus_per_replica", type=float, default=1, help="Ray CPUs reserved per replica")
    p.add_argument("--gpus_per_replica", type=float, default=0, help="Ray GPUs per replica")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    args = p.parse_args(argv)

    def go():
        from ..cluster import init_ray

        for name in ("num_replicas", "max_batch_size", "max_queue", "threads"):
            if getattr(args, name) < 1:
                raise HubError(f"--{name} must be >= 1, got {getattr(args, name)}")
        if bool(args.experiment_dir) == bool(args.model):
            raise HubError("give exactly one of --experiment_dir or --model")
        over = {k: v for k, v in {"task": args.task,  # unset: a merged model's llmhub.yaml, else the config default
                                  "max_new_tokens": args.max_new_tokens}.items() if v is not None}
        init_ray(args.address)
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(build_app(args.experiment_dir, args.model, over, args.num_replicas, args.max_batch_size,
                            args.batch_wait_ms, args.max_queue, args.threads, args.cpus_per_replica,
                            args.gpus_per_replica), name="llmhub", route_prefix="/")
        print(f"Ray Serve: {args.num_replicas} replica(s) on http://{args.host}:{args.port}; Ctrl-C stops",
              file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)

    run(go)


if __name__ == "__main__":
    main()
