"""Where generation runs: in this process (`local`) or in a vLLM server (`vllm`).

Both engines answer the same two calls, so everything else of the server (templates, label
matching, limits, metrics, routing by model name) is the same for both:
  `await complete(route, prompt, tokens, budget)` -> greedy text, cleaned as evaluation cleans it
                                                     (/predict and /generate)
  `await generate(route, job, tokens, request_id)` -> (choices, generated tokens)  (/v1/*)
Both keep a bounded queue: past `max_queue` waiting requests they raise `QueueFull` (503 +
Retry-After). The vLLM engine lets at most `max_batch_size` requests be in flight upstream (vLLM
batches those itself); a vLLM that is down or silent is `Unavailable` (503), never a hang.
"""
from __future__ import annotations

import asyncio
import json
import math
import time
from contextlib import asynccontextmanager

import httpx

from ..prompts import clean_generation
from . import decoding
from .batcher import MicroBatcher, QueueFull


class Unavailable(Exception):
    """The generation backend cannot answer now (503)."""


class Unsupported(Exception):
    """This engine cannot do what the request asks, though the request itself is valid (422)."""


class UpstreamError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class LocalEngine:
    """The model of a `Predictor`, in this process, behind the micro-batcher."""

    name = "local"
    default_temperature = 1.0  # OpenAI's

    def __init__(self, predictor, max_batch_size: int, max_wait_ms: float, max_queue: int, on_batch=None,
                 on_cancelled=None):
        self.p = predictor
        self.on_cancelled = on_cancelled or (lambda n: None)
        self.batcher = MicroBatcher(self._run, max_batch_size, max_wait_ms, max_queue, on_batch)

    def _run(self, payloads: list, budgets: list[int]) -> list:
        """One batch in the model thread: API jobs (sampling, streaming), or evaluation-equal greedy."""
        if isinstance(payloads[0], decoding.Job):
            out = decoding.decode(self.p.model, self.p.tokenizer, payloads, self.p.family)
            self.on_cancelled(sum(c.finish_reason == "cancelled" for choices in out for c in choices))
            return out
        prompts, adapters = [pl[0] for pl in payloads], [pl[1] for pl in payloads]
        active = getattr(self.p.model, "active_adapter", decoding.BASE_ADAPTER)
        if all(a == active for a in adapters):  # one adapter: the same call evaluation makes
            return self.p.complete(prompts, budgets)
        return self.p.complete(prompts, budgets, adapters)

    async def complete(self, route, prompt: str, tokens: int, budget: int) -> str:
        return await self.batcher.submit((prompt, route.adapter), tokens, budget)

    async def generate(self, route, job: decoding.Job, tokens: int, request_id: str):
        choices = await self.batcher.submit(job, tokens, 0, key=job.sampling.group(request_id))
        return choices, sum(c.tokens for c in choices)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    async def problem(self) -> str | None:
        """Why this engine cannot serve now (for /health), or None."""
        return None if self.batcher.alive else "the model worker has stopped; restart the server"

    def state(self) -> dict:
        b = self.batcher
        return {"queue_depth": b.depth, "in_flight": b.depth + b.running, "batches": b.batches}


class VllmEngine:
    """Forwards generation to a vLLM OpenAI-compatible server (`url`), model names unchanged."""

    name = "vllm"
    default_temperature = 1.0

    def __init__(self, url: str, max_in_flight: int, max_queue: int, on_batch=None, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.max_in_flight, self.max_queue = max_in_flight, max_queue
        self.on_batch = on_batch or (lambda *a: None)
        self.timeout = timeout
        self.waiting = self.running = self.batches = 0
        self._seconds = 1.0  # running mean of one request's time upstream, for Retry-After
        self.client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> None:
        # connect: 5 s, since a vLLM that is down refuses at once and one that is wedged must not
        # hold a client for minutes; read: a long generation under load
        self.client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(self.timeout, connect=5.0))
        self._slots = asyncio.Semaphore(self.max_in_flight)

    async def stop(self) -> None:
        if self.client:
            await self.client.aclose()

    def retry_after(self) -> int:
        ahead = math.ceil((self.waiting + self.running) / self.max_in_flight)
        return max(1, math.ceil(ahead * self._seconds))

    @asynccontextmanager
    async def _slot(self):
        if self.waiting >= self.max_queue:
            raise QueueFull(self.retry_after(), self.waiting, self.max_queue)
        queued = time.perf_counter()
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        start = time.perf_counter()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            seconds = time.perf_counter() - start
            self.batches += 1
            self._seconds = 0.8 * self._seconds + 0.2 * seconds if self.batches > 1 else seconds
            self.on_batch(1, seconds, [start - queued])

    def _unreachable(self, e: Exception) -> Unavailable:
        if isinstance(e, httpx.TimeoutException):
            return Unavailable(f"the vLLM server at {self.url} did not answer in time ({type(e).__name__})")
        return Unavailable(f"the vLLM server at {self.url} is not reachable ({type(e).__name__}); is it running?")

    @staticmethod
    async def _check(r: httpx.Response) -> None:
        if r.status_code == 200:
            return
        raw = (await r.aread()).decode(errors="replace")
        try:
            err = json.loads(raw).get("error", raw)
            message = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        except (json.JSONDecodeError, AttributeError):
            message = raw
        # the client's mistakes keep their status; vLLM's own failures are a bad gateway
        raise UpstreamError(r.status_code if r.status_code < 500 else 502, f"vLLM answered {r.status_code}: {message[:500]}")

    async def _post(self, body: dict) -> dict:
        async with self._slot():
            try:
                r = await self.client.post("/v1/completions", json=body)
            except httpx.HTTPError as e:
                raise self._unreachable(e) from None
            await self._check(r)
            return r.json()

    async def complete(self, route, prompt: str, tokens: int, budget: int) -> str:
        data = await self._post({"model": route.name, "prompt": prompt, "max_tokens": budget, "temperature": 0})
        return clean_generation(data["choices"][0]["text"])

    async def generate(self, route, job: decoding.Job, tokens: int, request_id: str):
        s = job.sampling
        body = {"model": route.name, "prompt": job.prompt, "max_tokens": s.max_new_tokens, "n": s.n,
                "temperature": s.temperature, "top_p": s.top_p, "stop": list(s.stop) or None, "seed": s.seed,
                "ignore_eos": s.ignore_eos, "add_special_tokens": job.add_special_tokens}
        # vLLM's own extensions, sent only when asked for (their defaults are vLLM's too)
        body.update({k: v for k, v, neutral in (("repetition_penalty", s.repetition_penalty, 1.0),
                                                 ("top_k", s.top_k, 0), ("min_p", s.min_p, 0.0)) if v != neutral})
        if job.on_text is None:
            data = await self._post(body)
            choices = [decoding.Choice(c["text"], 0, c.get("finish_reason") or "length")
                       for c in sorted(data["choices"], key=lambda c: c["index"])]
            return choices, data.get("usage", {}).get("completion_tokens", 0)
        return await self._stream({**body, "stream": True, "stream_options": {"include_usage": True}}, job)

    async def _stream(self, body: dict, job: decoding.Job):
        texts, finish, used = [""] * job.sampling.n, ["length"] * job.sampling.n, 0
        async with self._slot():
            try:
                async with self.client.stream("POST", "/v1/completions", json=body) as r:
                    await self._check(r)
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        used = (chunk.get("usage") or {}).get("completion_tokens", used)
                        for c in chunk.get("choices", []):
                            if c.get("text"):
                                texts[c["index"]] += c["text"]
                                job.on_text(c["index"], c["text"])
                            if c.get("finish_reason"):
                                finish[c["index"]] = c["finish_reason"]
            except httpx.HTTPError as e:
                raise self._unreachable(e) from None
        return [decoding.Choice(t, 0, f) for t, f in zip(texts, finish)], used

    async def problem(self) -> str | None:
        try:
            r = await self.client.get("/v1/models", timeout=3.0)
        except httpx.HTTPError as e:
            return str(self._unreachable(e))
        return None if r.status_code == 200 else f"the vLLM server at {self.url} answered {r.status_code}"

    def state(self) -> dict:
        return {"queue_depth": self.waiting, "in_flight": self.waiting + self.running, "batches": self.batches,
                "vllm_url": self.url}
