"""The FastAPI app around a `Predictor` and a `MicroBatcher`.

Endpoints:
  POST /predict  {"prompt": raw input[, "max_new_tokens": n]} -> {"prediction", "label"}
                 The server applies the experiment's fine-tuning template (the original contract).
  POST /generate {"inputs": full prompt, "parameters": {"max_new_tokens": n}} -> {"generated_text"}
                 TGI's contract: `inputs` is used as is, so one load-test body fits both servers.
  GET  /health   model, mode and queue state (also at /health-check, the original's path);
                 503 once the model worker has stopped, so an orchestrator restarts the process
  GET  /metrics  Prometheus text format

With an API key every endpoint but /health asks for `Authorization: Bearer <key>` (401 otherwise).
"""
from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from . import schema
from .batcher import MicroBatcher, QueueFull
from .metrics import ServerMetrics


log = logging.getLogger("llmhub.server")
OPEN_PATHS = ("/health", "/health-check")  # an orchestrator's probe carries no key


class ClientGone(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 before it is read whole: on Content-Length when the client sends
    one, else as soon as the streamed chunks pass the limit (a 300 MB body never sits in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise schema.ApiError(413, f"request body is {int(declared)} bytes; the limit is {limit} bytes",
                              "too_large")
    chunks, size = [], 0
    async for chunk in request.stream():  # raises ClientDisconnect if the client leaves mid-body
        size += len(chunk)
        if size > limit:
            raise schema.ApiError(413, f"request body is over {limit} bytes; the limit is {limit} bytes",
                                  "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class BatchSettings:
    mode: str = "batched"  # naive: one request per forward pass, like the original server
    max_batch_size: int = 16
    max_wait_ms: float = 50.0
    max_queue: int = 128

    def effective(self) -> tuple[int, float]:
        return (1, 0.0) if self.mode == "naive" else (self.max_batch_size, self.max_wait_ms)


def create_app(predictor, settings: BatchSettings = BatchSettings(),
               limits: schema.Limits = schema.Limits(), api_key: str | None = None) -> FastAPI:
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
        state["batcher"] = app.state.batcher = batcher
        yield
        await batcher.stop()

    app = FastAPI(title="llmhub inference server", lifespan=lifespan, docs_url=None, redoc_url=None)
    base_openapi = app.openapi
    app.openapi = lambda: app.openapi_schema or schema.add_request_schemas(base_openapi())

    if api_key:
        expected = f"Bearer {api_key}".encode()

        @app.middleware("http")
        async def bearer(request: Request, call_next):
            given = request.headers.get("authorization", "").encode()
            if request.url.path not in OPEN_PATHS and not hmac.compare_digest(given, expected):
                return JSONResponse({"error": "missing or wrong API key (Authorization: Bearer <key>)",
                                     "error_type": "unauthorized"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)

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
            body = schema.parse_json(await read_body(request, limits.max_body_bytes), limits)
            prompt, tokens, budget, shape = handler(body)
            completion = await until_disconnect(request, state["batcher"].submit(prompt, tokens, budget))
            metrics.input_tokens.inc(tokens)
            if predictor.family != "encoder":
                metrics.output_tokens.inc(count(completion))
            response = JSONResponse(shape(completion))
        except (ClientGone, ClientDisconnect):  # nobody to answer; count it as nginx does
            response = JSONResponse({"error": "client closed the request"}, status_code=499)
        except schema.ApiError as e:
            response = JSONResponse(e.body(), status_code=e.status)
        except QueueFull as e:
            response = JSONResponse({"error": f"server overloaded: {e.queued} requests queued "
                                              f"(limit {e.limit}); retry later", "error_type": "overloaded"},
                                    status_code=503, headers={"Retry-After": str(e.retry_after)})
        except Exception:  # a model failure answers 500 and the server keeps serving
            # The exception text may name files or inputs: it goes to the log, the client gets an id.
            request_id = uuid.uuid4().hex[:12]
            log.exception("request %s on /%s failed", request_id, endpoint)
            response = JSONResponse({"error": f"internal error; the server log has the details under request "
                                              f"id {request_id}", "error_type": "internal",
                                     "request_id": request_id}, status_code=500)
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

    @app.post("/predict", response_model=schema.PredictResponse, responses=schema.ERROR_RESPONSES,
              openapi_extra=schema.request_body(schema.PredictRequest))
    async def predict(request: Request):
        return await serve(request, "predict", predict_handler)

    @app.post("/generate", response_model=schema.GenerateResponse, responses=schema.ERROR_RESPONSES,
              openapi_extra=schema.request_body(schema.GenerateRequest))
    async def generate(request: Request):
        return await serve(request, "generate", generate_handler)

    @app.get("/health", responses={503: {"model": schema.ErrorResponse, "description": "worker stopped"}})
    @app.get("/health-check", include_in_schema=False)
    async def health():
        batcher = state.get("batcher")
        if batcher is None or not batcher.alive:
            return JSONResponse({"error": "the model worker has stopped; restart the server",
                                 "error_type": "unavailable", "status": "dead"}, status_code=503)
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
