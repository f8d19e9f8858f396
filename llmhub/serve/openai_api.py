"""OpenAI's API on our server: POST /v1/completions, POST /v1/chat/completions, GET /v1/models.

The prompt is used as is (/v1/completions) or rendered by the tokenizer's chat template
(/v1/chat/completions); the experiment's fine-tuning template is /predict's business. `model`
picks the base or an adapter (GET /v1/models lists them). Every request field is either honoured
or refused with 422 naming it: a client asking for something this server does not do (logprobs,
penalties, tools, ...) learns so instead of getting an answer that silently ignored it.

Honoured: max_tokens (chat: also max_completion_tokens), temperature (0 = greedy; default 1 as
OpenAI's, 0 in --mode continuous, which only decodes greedily), top_p, n, stop, seed (a seeded request runs in a batch of its own, so the same seed gives
the same answer), stream (server-sent events) with stream_options.include_usage, user (accepted,
not used), and vLLM's extensions ignore_eos, add_special_tokens, repetition_penalty, top_k and
min_p (as transformers' generate does them); vLLM's other extended fields (min_tokens,
use_beam_search, skip_special_tokens, ...) are accepted at their neutral values, as `vllm bench serve`
sends them. The response's `usage` counts
prompt tokens as the model sees them and generated tokens, EOS included.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .decoding import Job, Sampling

from .front import ClientGone, Front
from .schema import ApiError, check_tokens, max_new_tokens, text_field

MAX_N = 8  # choices per request: each one is a row of the batch
MAX_STOP = 4  # as OpenAI
COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
          "user", "ignore_eos", "repetition_penalty", "top_k", "min_p"}
FIELDS = {"completions": COMMON | {"prompt", "add_special_tokens"},
          "chat": COMMON | {"messages", "max_completion_tokens"}}
# Fields accepted only at the value that asks for nothing: anything else is refused, never ignored.
NEUTRAL = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
           "presence_penalty": (None, 0), "frequency_penalty": (None, 0), "logit_bias": (None, {}),
           "suffix": (None, ""), "tools": (None, []), "tool_choice": (None, "none"),
           "response_format": (None, {"type": "text"}), "parallel_tool_calls": (None, False, True),
           # vLLM's extended sampling API (what `vllm bench serve` and vLLM's clients send), at its neutral values
           "min_tokens": (None, 0), "use_beam_search": (None, False), "length_penalty": (None, 1),
           "include_stop_str_in_output": (None, False), "skip_special_tokens": (None, True),
           "spaces_between_special_tokens": (None, True), "stop_token_ids": (None, []), "bad_words": (None, []),
           "prompt_logprobs": (None,), "allowed_token_ids": (None,), "truncate_prompt_tokens": (None,)}


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(422, f"{name} must be a number, got {type(value).__name__}")
    if value > high or value < low or (low_open and value == low):
        raise ApiError(422, f"{name} is {value}; allowed: {'above' if low_open else 'from'} {low} to {high}")
    return float(value)


def _flag(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(422, f"{name} must be a boolean, got {type(value).__name__}")
    return value


def _same(value, neutral) -> bool:
    """value == neutral, where a boolean is not a number (in Python `True == 1`) but 1 is 1.0."""
    if value is None or neutral is None:
        return value is neutral
    kinds = {type(value), type(neutral)}
    return (len(kinds) == 1 or kinds == {int, float}) and value == neutral


def _check_fields(body: dict, kind: str) -> None:
    for name, value in body.items():
        if name in NEUTRAL:
            if not any(_same(value, v) for v in NEUTRAL[name]):
                neutral = " or ".join(repr(v) for v in NEUTRAL[name] if v is not None)
                raise ApiError(422, f"'{name}' is not supported by this server (only {neutral + ' or ' if neutral else ''}null)")
        elif name not in FIELDS[kind]:
            raise ApiError(422, f"unknown field '{name}'; this endpoint takes: {', '.join(sorted(FIELDS[kind]))}")


def parse_sampling(body: dict, limits, default_new: int, budget_field: str = "max_tokens",
                   default_temperature: float = 1.0) -> Sampling:
    """The decoding a request asks for, each field checked against what this server does."""
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOP:
        raise ApiError(422, f"stop must be a non-empty string or a list of at most {MAX_STOP} of them")
    n = body.get("n", 1)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        raise ApiError(422, f"n is {n!r}; allowed: an integer from 1 to {MAX_N}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ApiError(422, f"seed must be a non-negative integer, got {seed!r}")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}
                                or not _flag(body, "stream", False)):
        raise ApiError(422, "stream_options takes only {\"include_usage\": bool}, and only with stream=true")
    try:
        budget = max_new_tokens(body.get(budget_field), limits, default_new)
    except ApiError as e:
        raise ApiError(422, e.message.replace("max_new_tokens", budget_field)) from None
    top_k = body.get("top_k")
    top_k = 0 if top_k is None else top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < -1:
        raise ApiError(422, f"top_k is {top_k!r}; allowed: an integer, 0 or -1 (no cut) or at least 1")
    return Sampling(budget, _number(body, "temperature", default_temperature, 0.0, 2.0),
                    _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True), seed, tuple(stop), n,
                    _flag(body, "ignore_eos", False),
                    _number(body, "repetition_penalty", 1.0, 0.0, 10.0, low_open=True), max(top_k, 0),
                    _number(body, "min_p", 0.0, 0.0, 1.0))


def chat_prompt(tokenizer, body: dict, model: str) -> str:
    """The tokenizer's chat template applied to `messages`, ending where the assistant answers."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(422, "messages must be a non-empty list of {\"role\", \"content\"} objects")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or set(m) - {"role", "content", "name"}:
            raise ApiError(422, f"messages[{i}] must be {{\"role\": system|user|assistant, \"content\": text}}")
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                raise ApiError(422, f"messages[{i}].content: only text parts are supported")
            content = "".join(p["text"] for p in content)
        clean.append({"role": m["role"], "content": text_field({"content": content}, "content")})
    if not getattr(tokenizer, "chat_template", None):
        raise ApiError(422, f"model '{model}' has no chat template; use /v1/completions with a full prompt")
    return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)


def _usage(prompt: int, generated: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def add_routes(app: FastAPI, front: Front) -> None:
    """Register the /v1 endpoints on `app`."""

    @app.get("/v1/models")
    async def list_models():
        data = [{"id": r.name, "object": "model", "created": 0, "owned_by": "llmhub", "root": r.name,
                 "parent": r.parent} for r in front.catalog.routes.values()]
        return {"object": "list", "data": data}

    def prepare(body: dict, kind: str):
        _check_fields(body, kind)
        if "model" not in body:
            raise ApiError(422, f"missing field 'model'; allowed: {', '.join(front.catalog.routes)}")
        route = front.route(body["model"])
        if front.family == "encoder":
            raise ApiError(422, f"model '{route.name}' is a classifier; use /predict")
        budget_field = "max_completion_tokens" if kind == "chat" and "max_completion_tokens" in body else "max_tokens"
        sampling = parse_sampling(body, front.limits, route.predictor.max_new_tokens, budget_field,
                                  front.engine.default_temperature)
        if kind == "chat":
            prompt, special = chat_prompt(front.tokenizer, body, route.name), False
        else:
            prompt, special = text_field(body, "prompt"), _flag(body, "add_special_tokens", True)
        tokens = front.count(prompt, special)
        check_tokens(tokens, front.limits.max_input_tokens, "prompt")
        return route, Job(prompt, sampling, route.adapter, add_special_tokens=special), tokens

    async def handle(request: Request, body: dict, start: float, kind: str):
        route, job, tokens = prepare(body, kind)
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        head = {"id": rid, "created": int(time.time()), "model": route.name}
        if _flag(body, "stream", False):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await stream(request, route, job, tokens, kind, head, include_usage, start)
        try:
            choices, generated = await front.until_disconnect(request, front.engine.generate(route, job, tokens, rid))
        except ClientGone:  # its rows stop at the next decoding step
            job.cancelled.set()
            raise
        front.metrics.input_tokens.inc(tokens)
        front.metrics.output_tokens.inc(generated)
        if kind == "chat":
            out = [{"index": i, "message": {"role": "assistant", "content": c.text},
                    "finish_reason": _finish(c.finish_reason)} for i, c in enumerate(choices)]
            return JSONResponse({**head, "object": "chat.completion", "choices": out, "usage": _usage(tokens, generated)})
        out = [{"index": i, "text": c.text, "logprobs": None, "finish_reason": _finish(c.finish_reason)}
               for i, c in enumerate(choices)]
        return JSONResponse({**head, "object": "text_completion", "choices": out, "usage": _usage(tokens, generated)})

    async def stream(request, route, job, tokens, kind, head, include_usage, start):
        """Server-sent events. The status line waits for the first token, so a full queue (503), a
        vLLM that is down (503) or a failed batch (500) is still an ordinary error answer; a client
        that leaves ends its row at the next decoding step and frees its place in the batch."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job.on_text = lambda i, text: loop.call_soon_threadsafe(queue.put_nowait, (i, text))
        task = asyncio.ensure_future(front.engine.generate(route, job, tokens, head["id"]))
        task.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, None))
        endpoint = "v1/" + ("chat/completions" if kind == "chat" else "completions")

        def abandon():
            job.cancelled.set()
            task.cancel()

        try:
            first = await front.until_disconnect(request, queue.get())
            if first is None:
                task.result()  # raises the engine's failure: an ordinary error answer
        except BaseException:
            abandon()
            raise
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def event(choices: list, **extra) -> str:
            return "data: " + json.dumps({**head, "object": obj, "choices": choices, **extra}) + "\n\n"

        def piece(i: int, text: str, finish=None) -> dict:
            if kind == "chat":
                return {"index": i, "delta": {"content": text} if text else {}, "finish_reason": finish}
            return {"index": i, "text": text, "logprobs": None, "finish_reason": finish}

        async def events():
            status = 499
            try:
                if kind == "chat":
                    yield event([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                                 for i in range(job.sampling.n)])
                item = first
                while item is not None:
                    yield event([piece(*item)])
                    item = await queue.get()
                choices, generated = task.result()
                yield event([piece(i, "", _finish(c.finish_reason)) for i, c in enumerate(choices)])
                if include_usage:
                    yield event([], usage=_usage(tokens, generated))
                yield "data: [DONE]\n\n"
                status = 200
                front.metrics.input_tokens.inc(tokens)
                front.metrics.output_tokens.inc(generated)
            except Exception as e:  # after the status line: the error goes in the stream
                failed = front.failure(e, endpoint, openai=True)
                status = failed.status_code
                yield "data: " + failed.body.decode() + "\n\n"
            finally:  # also when the client left (the generator is closed or cancelled)
                if not task.done():
                    abandon()
                front.record(endpoint, status, start)

        response = StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        response.records_itself = True
        return response

    async def completions_handler(request: Request, body: dict, start: float):
        return await handle(request, body, start, "completions")

    async def chat_handler(request: Request, body: dict, start: float):
        return await handle(request, body, start, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await front.serve(request, "v1/completions", completions_handler, openai=True)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await front.serve(request, "v1/chat/completions", chat_handler, openai=True)
