"""`--mode continuous`: iteration-level batching with transformers' continuous-batching manager.

Why: the micro-batcher runs a batch until its longest answer is done, so a request that arrives
meanwhile waits for the whole batch, and finished rows keep riding along as padding. transformers'
`ContinuousBatchingManager` (`model.init_continuous_batching`, paged attention "paged|sdpa") lets a
request join the running batch at the next decoding step and leave when it is done; its KV cache
is a pool of pages (`--kv_cache_tokens`). We use it rather than a scheduler of our own.

What it does not do, so what this mode refuses (422, naming the mode): sampling (one manager has
one `do_sample`; decoding is greedy, and a /v1 request that leaves `temperature` out gets greedy
decoding), `n` > 1, seeds, and more than one adapter (the peft adapter loaded at start is the one
applied). Causal models only. Stop strings, budgets, streaming and clients that leave are ours: each
streamed token goes through the same `decoding.Row` as the micro-batched path, and a finished or
abandoned row is cancelled in the manager.
"""
from __future__ import annotations

import asyncio
import math
import time
import uuid

from ..errors import HubError
from ..prompts import clean_generation
from . import decoding
from .batcher import QueueFull
from .engines import Unsupported

ATTENTION = "paged|sdpa"  # transformers' paged KV cache with torch's scaled-dot-product attention


class ContinuousEngine:
    name = "local"
    default_temperature = 0.0  # greedy only: a /v1 request without temperature is not refused
    mode_note = "--mode continuous decodes greedily with one adapter"

    def __init__(self, predictor, max_batch_size: int, max_queue: int, kv_cache_tokens: int, on_batch=None,
                 on_cancelled=None):
        if predictor.family != "causal":
            raise HubError(f"--mode continuous serves causal language models; {predictor.name} is {predictor.family}")
        self.p = predictor
        self.max_batch_size, self.max_queue, self.kv_cache_tokens = max_batch_size, max_queue, kv_cache_tokens
        self.on_batch = on_batch or (lambda *a: None)
        self.on_cancelled = on_cancelled or (lambda n: None)
        self.eos = decoding.eos_ids(predictor.model, predictor.tokenizer)
        self.adapter = getattr(predictor.model, "active_adapter", decoding.BASE_ADAPTER)
        self.active = 0  # requests handed to the manager and not yet done
        self.batches = 0  # requests finished (there are no batch boundaries to count)
        self._seconds = 1.0  # running mean of one request's time, for Retry-After
        self.manager = None

    def start(self) -> None:
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        model = self.p.model
        model.set_attn_implementation(ATTENTION)
        page = 256
        config = ContinuousBatchingConfig(page_size=page, num_blocks=math.ceil(self.kv_cache_tokens / page),
                                          max_requests_per_batch=self.max_batch_size)
        gen = GenerationConfig(do_sample=False, max_new_tokens=1, eos_token_id=sorted(self.eos),
                               pad_token_id=self.p.tokenizer.pad_token_id)
        self.manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=config)
        self.manager.start()

    async def stop(self) -> None:
        if self.manager is not None:
            manager, self.manager = self.manager, None
            await asyncio.get_running_loop().run_in_executor(None, lambda: manager.stop(block=True, timeout=10))

    async def problem(self) -> str | None:
        alive = self.manager is not None and self.manager.is_running()
        return None if alive else "the continuous-batching worker has stopped; restart the server"

    def state(self) -> dict:
        waiting = max(0, self.active - self.max_batch_size)
        return {"queue_depth": waiting, "in_flight": self.active, "batches": self.batches}

    def _check(self, route, sampling: decoding.Sampling) -> None:
        if route.adapter not in (self.adapter, decoding.BASE_ADAPTER if self.adapter == decoding.BASE_ADAPTER else None):
            raise Unsupported(f"{self.mode_note}: model '{route.name}' is not served in this mode")
        if sampling.temperature > 0 or sampling.n > 1 or sampling.seed is not None:
            raise Unsupported(f"{self.mode_note}: temperature > 0, n > 1 and seed are not supported "
                              "(use --mode batched)")
        if sampling.repetition_penalty != 1.0:  # one generation config serves every request
            raise Unsupported(f"{self.mode_note}: repetition_penalty other than 1 is not supported "
                              "(use --mode batched)")

    async def _run(self, prompt_ids: list[int], row: decoding.Row) -> decoding.Choice:
        """Feed `row` every token the manager streams for `prompt_ids` until the row is done."""
        if self.active >= self.max_queue + self.max_batch_size:
            ahead = math.ceil(self.active / self.max_batch_size)
            raise QueueFull(max(1, math.ceil(ahead * self._seconds)), self.active - self.max_batch_size, self.max_queue)
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        rid, seen, start = uuid.uuid4().hex, [0], time.perf_counter()
        manager_done = [False]

        def on_output(out) -> None:  # runs on the event loop, one call per generated token
            if done.done():
                return
            if out.error:
                done.set_exception(RuntimeError(f"continuous batching failed: {out.error}"))
                return
            finished = False
            for token in out.generated_tokens[seen[0]:]:
                finished = row.step(token)
                if finished:
                    break
            seen[0] = len(out.generated_tokens)
            manager_done[0] = out.is_finished()
            if finished or out.is_finished():
                done.set_result(row.close())

        self.manager.register_result_handler(rid, on_output)
        self.active += 1
        try:
            s = row.job.sampling
            self.manager.add_request(prompt_ids, request_id=rid, max_new_tokens=s.max_new_tokens, streaming=True,
                                     eos_token_id=-1 if s.ignore_eos else sorted(self.eos))
            choice = await done
            if choice.finish_reason == "cancelled":
                self.on_cancelled(1)
            return choice
        except asyncio.CancelledError:  # the client left
            row.job.cancelled.set()
            self.on_cancelled(1)
            raise
        finally:
            self.active -= 1
            if not manager_done[0]:  # the row ended first (stop string, client left): free its pages
                self.manager.cancel_request(rid)
            seconds = time.perf_counter() - start
            self.batches += 1
            self._seconds = 0.8 * self._seconds + 0.2 * seconds if self.batches > 1 else seconds
            self.on_batch(1, seconds, [0.0])

    def _ids(self, prompt: str, special: bool = True) -> list[int]:
        return self.p.tokenizer(prompt, add_special_tokens=special, truncation=True,
                                max_length=self.p.max_source_length)["input_ids"]

    async def complete(self, route, prompt: str, tokens: int, budget: int) -> str:
        """Greedy, cleaned as evaluation cleans it (/predict, /generate)."""
        self._check(route, decoding.Sampling(budget, 0.0))
        job = decoding.Job(prompt, decoding.Sampling(budget, 0.0), route.adapter)
        choice = await self._run(self._ids(prompt), decoding.Row(job, 0, self.p.tokenizer, self.eos))
        return clean_generation(choice.text)

    async def generate(self, route, job: decoding.Job, tokens: int, request_id: str):
        self._check(route, job.sampling)
        ids = self.p.tokenizer(job.prompt, add_special_tokens=job.add_special_tokens)["input_ids"]
        choice = await self._run(ids, decoding.Row(job, 0, self.p.tokenizer, self.eos))
        return [choice], choice.tokens
