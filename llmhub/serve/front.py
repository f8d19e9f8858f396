"""What every endpoint shares: reading the body under its size limit, counting tokens, finding the
route of a model name, noticing a client that left, and turning every failure into one status code
with a one-sentence error (our shape on /predict and /generate, OpenAI's on /v1/*)."""
from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from ..generate import count_tokens
from . import schema
from .batcher import QueueFull
from .engines import Unavailable, Unsupported, UpstreamError
from .prometheus import ServerMetrics

log = logging.getLogger("llmhub.server")


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


def error_response(status: int, message: str, kind: str, openai: bool, headers: dict | None = None,
                   request_id: str | None = None) -> JSONResponse:
    if openai:  # the shape OpenAI's clients parse: {"error": {"message", "type", ...}}
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    else:
        body = {"error": message, "error_type": kind}
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=headers)


class Front:
    def __init__(self, catalog, engine, limits: schema.Limits, metrics: ServerMetrics):
        self.catalog, self.engine, self.limits, self.metrics = catalog, engine, limits, metrics
        primary = catalog.get(None).predictor
        self.family = primary.family
        # The model thread tokenizes its batches while the event loop tokenizes new requests; a fast
        # tokenizer is not safe to share across threads ("Already borrowed"), so the loop gets a copy.
        self.tokenizer = copy.deepcopy(primary.tokenizer)

    def count(self, text: str, special: bool = False) -> int:
        return count_tokens(self.tokenizer, text, special)

    def route(self, name):
        if name is not None and not isinstance(name, str):
            raise schema.ApiError(422, f"field 'model' must be a string, got {type(name).__name__}")
        try:
            return self.catalog.get(name)
        except KeyError as e:
            raise schema.ApiError(404, e.args[0], "not_found") from None

    @staticmethod
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

    def failure(self, e: Exception, endpoint: str, openai: bool) -> Response:
        """The answer to a request that failed with `e`."""
        if isinstance(e, (ClientGone, ClientDisconnect)):  # nobody to answer; count it as nginx does
            return JSONResponse({"error": "client closed the request"}, status_code=499)
        if isinstance(e, schema.ApiError):
            return error_response(e.status, e.message, e.kind, openai)
        if isinstance(e, Unsupported):
            return error_response(422, str(e), "validation", openai)
        if isinstance(e, QueueFull):
            return error_response(503, f"server overloaded: {e.queued} requests queued (limit {e.limit}); "
                                       "retry later", "overloaded", openai, {"Retry-After": str(e.retry_after)})
        if isinstance(e, Unavailable):
            return error_response(503, str(e), "unavailable", openai, {"Retry-After": "5"})
        if isinstance(e, UpstreamError):
            return error_response(e.status, e.message, "upstream", openai)
        # a model failure answers 500 and the server keeps serving; the exception text may name
        # files or inputs: it goes to the log, the client gets an id
        request_id = uuid.uuid4().hex[:12]
        log.error("request %s on /%s failed", request_id, endpoint, exc_info=e)
        return error_response(500, f"internal error; the server log has the details under request id {request_id}",
                              "internal", openai, request_id=request_id)

    def record(self, endpoint: str, status: int, start: float) -> None:
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def serve(self, request: Request, endpoint: str, handler, openai: bool = False) -> Response:
        """Read and parse the body, run `await handler(request, body, start)` and answer every failure.
        A handler that streams records its own metrics when its stream ends."""
        start = time.perf_counter()
        try:
            body = schema.parse_json(await read_body(request, self.limits.max_body_bytes), self.limits)
            response = await handler(request, body, start)
            if getattr(response, "records_itself", False):
                return response
        except Exception as e:
            response = self.failure(e, endpoint, openai)
        self.record(endpoint, response.status_code, start)
        return response
