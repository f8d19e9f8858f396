"""The FastAPI app around a `Predictor` and a `MicroBatcher`.

Endpoints:
  POST /predict  {"prompt": raw input[, "max_new_tokens": n][, "model": name]} -> {"prediction", "label"}
                 The server applies the fine-tuning template of the experiment behind `model`
                 (the original contract; default: the first model served).
  POST /generate {"inputs": full prompt, "parameters": {"max_new_tokens": n}} -> {"generated_text"}
                 TGI's contract: `inputs` is used as is, so one load-test body fits both servers.
  POST /v1/completions, /v1/chat/completions, GET /v1/models   OpenAI's API (openai_api.py)
  GET  /health   model, mode and queue state (also at /health-check, the original's path);
                 503 once the model worker has stopped, so an orchestrator restarts the process
  GET  /metrics  Prometheus text format

With an API key every endpoint but /health asks for `Authorization: Bearer <key>` (401 otherwise).
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from . import endpoints, openai_api, schema
from .engines import LocalEngine
from .front import Front, error_response
from .prometheus import ServerMetrics

OPEN_PATHS = ("/health", "/health-check")  # an orchestrator's probe carries no key


@dataclass(frozen=True)
class BatchSettings:
    mode: str = "batched"  # naive: one request per forward pass, like the original server
    max_batch_size: int = 16
    max_wait_ms: float = 50.0
    max_queue: int = 128

    def effective(self) -> tuple[int, float]:
        if self.mode == "continuous":  # requests join at the next decoding step: nobody waits for companions
            return self.max_batch_size, 0.0
        return (1, 0.0) if self.mode == "naive" else (self.max_batch_size, self.max_wait_ms)


def create_app(predictor, settings: BatchSettings = BatchSettings(),
               limits: schema.Limits = schema.Limits(), api_key: str | None = None,
               catalog=None, engine=None, metrics: ServerMetrics | None = None) -> FastAPI:
    """The app for `catalog` (default: `predictor` under one name) on `engine` (default: local)."""
    from . import catalog as catalog_mod

    metrics = metrics or ServerMetrics()
    size, wait_ms = settings.effective()
    if catalog is None:
        catalog = catalog_mod.Catalog()
        catalog.add(catalog_mod.Route(predictor.name or "model", predictor, catalog_mod.BASE_ADAPTER))
        catalog.default = next(iter(catalog.routes))
    engine = engine or LocalEngine(predictor, size, wait_ms, settings.max_queue, metrics.on_batch,
                                   metrics.cancelled.inc)
    front = Front(catalog, engine, limits, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        app.state.engine = engine
        app.state.batcher = getattr(engine, "batcher", None)
        yield
        await engine.stop()

    app = FastAPI(title="llmhub inference server", lifespan=lifespan, docs_url=None, redoc_url=None)
    base_openapi = app.openapi
    app.openapi = lambda: app.openapi_schema or schema.add_request_schemas(base_openapi())

    if api_key:
        import hmac

        expected = f"Bearer {api_key}".encode()

        @app.middleware("http")
        async def bearer(request: Request, call_next):
            given = request.headers.get("authorization", "").encode()
            if request.url.path not in OPEN_PATHS and not hmac.compare_digest(given, expected):
                return error_response(401, "missing or wrong API key (Authorization: Bearer <key>)", "unauthorized",
                                      request.url.path.startswith("/v1/"), {"WWW-Authenticate": "Bearer"})
            return await call_next(request)

    def handler(endpoint: str):
        async def handle(request: Request, body: dict, start: float):
            route = front.route(body.get("model"))
            work = endpoints.ENDPOINTS[endpoint](body, limits, route.predictor, front.tokenizer)
            completion = await front.until_disconnect(request, engine.complete(route, work.prompt, work.tokens,
                                                                              work.budget))
            metrics.input_tokens.inc(work.tokens)
            if front.family != "encoder":
                metrics.output_tokens.inc(front.count(completion))
            return JSONResponse(work.respond(completion))
        return handle

    @app.post("/predict", response_model=schema.PredictResponse, responses=schema.ERROR_RESPONSES,
              openapi_extra=schema.request_body(schema.PredictRequest))
    async def predict(request: Request):
        return await front.serve(request, "predict", handler("predict"))

    @app.post("/generate", response_model=schema.GenerateResponse, responses=schema.ERROR_RESPONSES,
              openapi_extra=schema.request_body(schema.GenerateRequest))
    async def generate(request: Request):
        return await front.serve(request, "generate", handler("generate"))

    openai_api.add_routes(app, front)

    @app.get("/health", responses={503: {"model": schema.ErrorResponse, "description": "worker stopped"}})
    @app.get("/health-check", include_in_schema=False)
    async def health():
        problem = await engine.problem()
        if problem:
            return JSONResponse({"error": problem, "error_type": "unavailable", "status": "dead"}, status_code=503)
        return {"status": "ok", "engine": engine.name, "mode": settings.mode, "max_batch_size": size,
                "max_wait_ms": wait_ms, "max_queue": settings.max_queue, **engine.state(),
                "models": list(catalog.routes), **catalog.get(None).predictor.describe()}

    @app.get("/metrics")
    async def prometheus():
        metrics.queue_depth.set(engine.state()["queue_depth"])
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
