"""Decoding for the OpenAI-compatible endpoints: sampling, stop strings, per-row budgets, streaming,
cancellation and per-row LoRA adapters, on top of one `model.generate` call per batch.

Why not `generate.generate`: that path is evaluation's greedy decoding (answers must equal
predictions.jsonl). Requests of an API carry their own budget, stop strings, adapter and a client
that may hang up; all of that is per row, so it is decided by one `StoppingCriteria` that looks at
every row after every step: it streams the new text of each row, ends a row at EOS, at its budget,
at a stop string or when its client left, and `generate` stops once every row has ended. Rows of
one batch share temperature, top_p and seed (the batcher groups requests by `Sampling.group`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..generate import padding_side

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


@dataclass(frozen=True)
class Sampling:
    """What a request asks of the decoder. temperature 0 is greedy decoding."""
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    ignore_eos: bool = False
    # vLLM's extensions that transformers' generate also implements; the defaults change nothing
    repetition_penalty: float = 1.0  # CTRL's: a seen token's logit /penalty (x penalty if negative)
    top_k: int = 0  # 0: no top-k cut (vLLM also writes -1)
    min_p: float = 0.0  # drop tokens below min_p x the most likely one's probability

    def group(self, request_id: str) -> tuple:
        """Batch key: requests sharing it can run in one `generate` call. A seeded request runs
        alone, so its answer depends on the seed only, not on which requests it was batched with."""
        seed = (self.seed, request_id) if self.seed is not None else None
        sampled = self.temperature > 0  # greedy decoding ignores top_p, top_k and min_p
        return ("sample", self.temperature if sampled else 0.0, self.top_p if sampled else 1.0, seed,
                self.ignore_eos, self.repetition_penalty, max(self.top_k, 0) if sampled else 0,
                self.min_p if sampled else 0.0)


@dataclass
class Job:
    """One request: its prompt, n choices, adapter, and `on_text(choice, delta)` for streaming."""
    prompt: str
    sampling: Sampling
    adapter: str = BASE_ADAPTER
    add_special_tokens: bool = True  # False for a chat template's output, which holds them already
    on_text: Callable[[int, str], None] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Choice:
    text: str
    tokens: int  # generated tokens, EOS included
    finish_reason: str  # stop | length | cancelled


class Row:
    """Decoding state of one choice of one job: fed one token at a time (`step`), it streams the new
    text and decides when the choice is done. Also used by the continuous-batching engine."""

    def __init__(self, job: Job, index: int, tokenizer, eos: set[int]):
        self.job, self.index, self.tok, self.eos = job, index, tokenizer, eos
        self.ids: list[int] = []
        self.text, self.sent = "", 0  # decoded text; characters already streamed
        self.finish: str | None = None

    def step(self, token: int) -> bool:
        """Take the next generated token; True once the choice is done."""
        s = self.job.sampling
        if self.finish is not None:
            return True
        if self.job.cancelled.is_set():
            self.finish = "cancelled"
            return True
        self.ids.append(token)
        if token in self.eos and not s.ignore_eos:
            self.finish = "stop"
        else:
            self.text = self.tok.decode(self.ids, skip_special_tokens=True)
            cut = min((i for i in (self.text.find(x) for x in s.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text, self.finish = self.text[:cut], "stop"
            elif len(self.ids) >= s.max_new_tokens:
                self.finish = "length"
        self.emit(final=self.finish is not None)
        return self.finish is not None

    def close(self, reason: str = "length") -> Choice:
        """The choice, ending it with `reason` if the decoder stopped first."""
        if self.finish is None:
            self.finish = reason
            self.emit(final=True)
        return Choice(self.text, len(self.ids), self.finish)

    def hold_back(self) -> int:
        """Characters not yet safe to stream: a stop string may still complete over them."""
        return max((len(s) - 1 for s in self.job.sampling.stop), default=0)

    def emit(self, final: bool) -> None:
        upto = len(self.text) if final else len(self.text) - self.hold_back()
        if self.text.endswith("\ufffd") and not final:  # half of a multi-byte character
            upto = min(upto, len(self.text) - 1)
        if upto > self.sent and self.job.on_text:
            self.job.on_text(self.index, self.text[self.sent:upto])
        self.sent = max(self.sent, upto)


class _RowCriteria(StoppingCriteria):
    def __init__(self, rows: list[Row]):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = [row.step(token) for row, token in zip(self.rows, input_ids[:, -1].tolist())]
        return torch.tensor(done, device=input_ids.device)


def eos_ids(model, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    return {int(e) for e in eos + [tokenizer.eos_token_id] if e is not None}


@torch.inference_mode()
def decode(model, tokenizer, jobs: list[Job], family: str) -> list[list[Choice]]:
    """Choices of every job, decoded in one `generate` call (the jobs share `Sampling.group`)."""
    eos = eos_ids(model, tokenizer)
    rows = [Row(job, i, tokenizer, eos) for job in jobs for i in range(job.sampling.n)]
    s = jobs[0].sampling
    if s.seed is not None:  # the job runs alone (see Sampling.group): its n rows come from this seed
        torch.manual_seed(s.seed)
    device = next(model.parameters()).device
    ids = [tokenizer(r.job.prompt, add_special_tokens=r.job.add_special_tokens)["input_ids"] for r in rows]
    enc = tokenizer.pad({"input_ids": ids}, padding_side=padding_side(family), return_tensors="pt").to(device)
    budget = max(r.job.sampling.max_new_tokens for r in rows)
    kwargs = dict(max_new_tokens=budget, pad_token_id=tokenizer.pad_token_id, num_beams=1,
                  stopping_criteria=StoppingCriteriaList([_RowCriteria(rows)]))
    if s.temperature > 0:  # top_k=0: OpenAI's sampling has no top-k cut (transformers' default is 50)
        kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=max(s.top_k, 0),
                      min_p=s.min_p or None)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if s.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = s.repetition_penalty
    if s.ignore_eos:
        kwargs["min_new_tokens"] = budget
    if hasattr(model, "peft_config"):  # peft's mixed-adapter batch: one adapter (or none) per row
        kwargs["adapter_names"] = [r.job.adapter for r in rows]
    model.generate(**enc, **kwargs)
    out: list[list[Choice]] = [[] for _ in jobs]
    by_job = {id(job): k for k, job in enumerate(jobs)}
    for row in rows:  # a row still open: generate ended on its own limit first
        out[by_job[id(row.job)]].append(row.close())
    return out
