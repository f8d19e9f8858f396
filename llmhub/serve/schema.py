"""Request checking shared by the FastAPI server and the Ray Serve deployment.

Every bad request gets one sentence that names the field and, for limits, the limit:
413 for a body or input that is too long, 422 for malformed JSON, a missing/empty/mistyped field,
or a max_new_tokens outside 1..limit.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "validation"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind

    def body(self) -> dict:
        return {"error": self.message, "error_type": self.kind}


@dataclass(frozen=True)
class Limits:
    max_input_tokens: int = 2048  # raw input of /predict; longer ones are fitted like evaluation does
    max_new_tokens: int = 256  # most tokens one request may ask to generate
    max_body_bytes: int = 1_000_000  # checked before parsing: a 1 MB body is ~250k tokens of text


def parse_json(raw: bytes, limits: Limits) -> dict:
    if len(raw) > limits.max_body_bytes:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {limits.max_body_bytes} bytes",
                       "too_large")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(422, f"request body is not valid JSON ({e})") from None
    except RecursionError:  # e.g. [[[[...]]]] 100,000 deep: the parser's recursion limit
        raise ApiError(422, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(422, f"request body must be a JSON object, got {type(body).__name__}")
    _check_finite(body, "")
    return body


def _check_finite(value, where: str) -> None:
    """Python's json reads NaN, Infinity and 1e999 as floats no one can decode with: refuse them here,
    naming the field, before any handler compares or forwards them."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, f"field '{where}' must be a finite number, got {value}")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if isinstance(item, (float, dict, list)):
            _check_finite(item, f"{where}.{key}" if isinstance(key, str) and where else
                          key if isinstance(key, str) else f"{where}[{key}]")


def text_field(body: dict, name: str) -> str:
    if name not in body:
        raise ApiError(422, f"missing field '{name}' (a non-empty string)")
    value = body[name]
    if not isinstance(value, str):
        raise ApiError(422, f"field '{name}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ApiError(422, f"field '{name}' is empty")
    try:  # JSON allows a lone surrogate escape ("\\ud800"), which no tokenizer can encode
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, f"field '{name}' is not valid Unicode text (lone surrogate)") from None
    return value


def max_new_tokens(value, limits: Limits, default: int) -> int:
    if value is None:
        return min(default, limits.max_new_tokens)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"max_new_tokens must be an integer, got {type(value).__name__}")
    if not 1 <= value <= limits.max_new_tokens:
        raise ApiError(422, f"max_new_tokens is {value}; allowed: 1 to {limits.max_new_tokens}")
    return value


def parse_predict(body: dict, limits: Limits, default_new: int) -> tuple[str, int]:
    """{"prompt": raw input, "max_new_tokens"?: int} -> (input, budget)."""
    return text_field(body, "prompt"), max_new_tokens(body.get("max_new_tokens"), limits, default_new)


def parse_generate(body: dict, limits: Limits, default_new: int) -> tuple[str, int]:
    """TGI's {"inputs": full prompt, "parameters"?: {"max_new_tokens", ...}} -> (prompt, budget).
    Decoding is greedy; asking for sampling is refused rather than silently ignored."""
    prompt = text_field(body, "inputs")
    params = body.get("parameters")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise ApiError(422, f"field 'parameters' must be an object, got {type(params).__name__}")
    do_sample = params.get("do_sample")
    if do_sample is not None and not isinstance(do_sample, bool):  # "false" is a string, not false
        raise ApiError(422, f"parameters.do_sample must be a boolean, got {type(do_sample).__name__}")
    if do_sample:
        raise ApiError(422, "this server decodes greedily; do_sample=true is not supported")
    return prompt, max_new_tokens(params.get("max_new_tokens"), limits, default_new)


def check_tokens(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise ApiError(413, f"{what} is {n} tokens; the limit is {limit} tokens", "too_large")


# ----- the contract as OpenAPI sees it (the handlers above do the checking, with one-line messages) -----
class PredictRequest(BaseModel):
    """POST /predict: the raw input; the server applies the experiment's template."""
    model_config = ConfigDict(extra="allow")
    prompt: str = Field(min_length=1, description="raw input (a dialogue, a post), not a rendered prompt")
    max_new_tokens: int | None = Field(None, ge=1, description="tokens to generate (1..server limit)")
    model: str | None = Field(None, description="a served model name (GET /v1/models); default: the first")


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="allow")
    max_new_tokens: int | None = Field(None, ge=1)
    do_sample: bool | None = Field(None, strict=True, description="only false: decoding is greedy")


class GenerateRequest(BaseModel):
    """POST /generate (TGI's contract): the full prompt, used as is."""
    model_config = ConfigDict(extra="allow")
    inputs: str = Field(min_length=1)
    parameters: GenerateParameters | None = None
    model: str | None = Field(None, description="a served model name (GET /v1/models); default: the first")


class PredictResponse(BaseModel):
    prediction: str
    label: str | None


class GenerateResponse(BaseModel):
    generated_text: str


class ErrorResponse(BaseModel):
    error: str = Field(description="one sentence naming the field and, for limits, the limit")
    error_type: str = Field(description="validation | too_large | overloaded | unavailable | internal")
    request_id: str | None = Field(None, description="500 only: the id the server's log carries")


REQUEST_MODELS = (PredictRequest, GenerateRequest)
ERROR_RESPONSES = {
    401: {"model": ErrorResponse, "description": "missing or wrong Bearer key (only with --api_key)"},
    413: {"model": ErrorResponse, "description": "body over the byte limit or input over the token limit"},
    422: {"model": ErrorResponse, "description": "malformed JSON or a missing, empty or mistyped field"},
    503: {"model": ErrorResponse, "description": "queue full (with Retry-After) or the model worker stopped"},
    500: {"model": ErrorResponse, "description": "model failure; the log has the details under request_id"},
}


def request_body(model: type[BaseModel]) -> dict:
    """openapi_extra of a route whose body is read by hand (size limit first) but follows `model`."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def add_request_schemas(openapi: dict) -> dict:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in REQUEST_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return openapi
