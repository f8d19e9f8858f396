"""The FastAPI app around a `Predictor` and a `MicroBatcher`.

Endpoints:
  POST /predict  {"prompt": raw input[, "max_new_tokens": n]} -> {"prediction", "label"}
                 The server applies the experiment's fine-tuning template (the original contract).
  POST /generate {"inputs": full prompt, "parameters": {"max_new_tokens": n}} -> {"generated_text"}
                 TGI's contract: `inputs` is used as is, so one load-test body fits both servers.
  GET  /health   model, mode and queue state (also at /health-check, the original's path)
  GET  /metrics  Prometheus text format
"""
from __future__ import annotations

import asyncio
import copy
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import schema
from .batcher import MicroBatcher, QueueFull
from .metrics import ServerMetrics


class ClientGone(Exception):
    pass


@dataclass(frozen=True)
class BatchSettings:
    mode: str = "batched"  # naive: one request per forward pass, like the original server
    max_batch_size: int = 16
    max_wait_ms: float = 50.0
    max_queue: int = 128

    def effective(self) -> tuple[int, float]:
        return (1, 0.0) if self.mode == "naive" else (self.max_batch_size, self.max_wait_ms)


def create_app(predictor, settings: BatchSettings = BatchSettings(),
               limits: schema.Limits = schema.Limits()) -> FastAPI:
    metrics = ServerMetrics()
    # The model thread tokenizes its batches while the event loop tokenizes new requests; a fast
    # tokenizer is not safe to share across threads ("Already borrowed"), so the loop gets a copy.
    front_tok = copy.deepcopy(predictor.tokenizer)
    size, wait_ms = settings.effective()
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(predictor.complete, size, wait_ms, settings.max_queue, metrics.on_batch)
        batcher.start()
        state["batcher"] = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="llmhub inference server", lifespan=lifespan, docs_url=None, redoc_url=None)

    def count(text: str) -> int:
        return len(front_tok(text, add_special_tokens=False)["input_ids"])

    async def until_disconnect(request: Request, work):
        """Await `work`, but drop it if the client goes away first: a request whose client timed out
        must not take a place in a batch (its future is cancelled, the batcher skips it)."""
        task = asyncio.ensure_future(work)

        async def gone():
            while (await request.receive())["type"] != "http.disconnect":
                pass

        watcher = asyncio.ensure_future(gone())
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            watcher.cancel()
            return task.result()
        task.cancel()
        raise ClientGone()

    async def serve(request: Request, endpoint: str, handler) -> JSONResponse:
        start = time.perf_counter()
        try:
            body = schema.parse_json(await request.body(), limits)
            prompt, tokens, budget, shape = handler(body)
            completion = await until_disconnect(request, state["batcher"].submit(prompt, tokens, budget))
            metrics.input_tokens.inc(tokens)
            if predictor.family != "encoder":
                metrics.output_tokens.inc(count(completion))
            response = JSONResponse(shape(completion))
        except ClientGone:  # nobody to answer; count it as nginx does
            response = JSONResponse({"error": "client closed the request"}, status_code=499)
        except schema.ApiError as e:
            response = JSONResponse(e.body(), status_code=e.status)
        except QueueFull as e:
            response = JSONResponse({"error": f"server overloaded: {state['batcher'].depth} requests queued "
                                              f"(limit {settings.max_queue}); retry later", "error_type": "overloaded"},
                                    status_code=503, headers={"Retry-After": str(e.retry_after)})
        except Exception as e:  # a model failure answers 500 and the server keeps serving
            response = JSONResponse({"error": f"{type(e).__name__}: {e}", "error_type": "internal"}, status_code=500)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    def predict_handler(body: dict):
        text, budget = schema.parse_predict(body, limits, predictor.max_new_tokens)
        n = count(text)
        schema.check_tokens(n, limits.max_input_tokens, "prompt")
        # Same rendering (template, input fitted to max_source_length) as `llmhub evaluate`.
        prompt = predictor.render([text], tokenizer=front_tok)[0]
        return prompt, n, budget, predictor.answer

    def generate_handler(body: dict):
        prompt, budget = schema.parse_generate(body, limits, predictor.max_new_tokens)
        n = count(prompt)
        # A rendered prompt cannot be cut without losing its template tail, so refuse it instead.
        schema.check_tokens(n, min(limits.max_input_tokens, predictor.max_source_length), "inputs")
        return prompt, n, budget, lambda c: {"generated_text": c}

    @app.post("/predict")
    async def predict(request: Request):
        return await serve(request, "predict", predict_handler)

    @app.post("/generate")
    async def generate(request: Request):
        return await serve(request, "generate", generate_handler)

    @app.get("/health")
    @app.get("/health-check")
    async def health():
        batcher = state.get("batcher")
        return {"status": "ok", "mode": settings.mode, "max_batch_size": size, "max_wait_ms": wait_ms,
                "max_queue": settings.max_queue, "queue_depth": batcher.depth if batcher else 0,
                "in_flight": batcher.depth + batcher.running if batcher else 0,
                "batches": batcher.batches if batcher else 0, **predictor.describe()}

    @app.get("/metrics")
    async def prometheus():
        if state.get("batcher"):
            metrics.queue_depth.set(state["batcher"].depth)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
