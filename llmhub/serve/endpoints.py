"""POST /predict and POST /generate, read once for both servers (the FastAPI app and Ray Serve): a
request body becomes the prompt the model sees, its input tokens, the token budget, and the way the
completion becomes the response. Errors are `schema.ApiError`s, answered alike by both servers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..generate import count_tokens
from . import schema


@dataclass(frozen=True)
class Work:
    prompt: str  # what the model sees
    tokens: int  # input tokens the client sent (limits, metrics)
    budget: int  # max_new_tokens
    respond: Callable[[str], dict]  # completion -> response body


def predict(body: dict, limits: schema.Limits, predictor, tokenizer) -> Work:
    """{"prompt": raw input}: rendered with the run's template, the input fitted to max_source_length,
    as `llmhub evaluate` renders it; answered {"prediction", "label"}."""
    text, budget = schema.parse_predict(body, limits, predictor.max_new_tokens)
    n = count_tokens(tokenizer, text, special_tokens=False)
    schema.check_tokens(n, limits.max_input_tokens, "prompt")
    return Work(predictor.render([text], tokenizer=tokenizer)[0], n, budget, predictor.answer)


def generate(body: dict, limits: schema.Limits, predictor, tokenizer) -> Work:
    """{"inputs": rendered prompt}: refused when too long, since cutting a rendered prompt would lose
    its template's tail; answered {"generated_text"}."""
    prompt, budget = schema.parse_generate(body, limits, predictor.max_new_tokens)
    n = count_tokens(tokenizer, prompt, special_tokens=False)
    schema.check_tokens(n, min(limits.max_input_tokens, predictor.max_source_length), "inputs")
    return Work(prompt, n, budget, lambda completion: {"generated_text": completion})


ENDPOINTS = {"predict": predict, "generate": generate}
