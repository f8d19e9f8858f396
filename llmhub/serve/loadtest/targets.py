"""Request bodies from real test examples, one per server type, written as a Vegeta targets file.

As in the seeds, each request carries an input of about 100 tokens: test examples whose input is
within +-20 % of the target length are taken in file order (longer ones are cut to the target when
too few fit). The file uses Vegeta's JSON target format (`vegeta attack -format=json`): one
{"method", "url", "body" (base64), "header"} object per line. A sidecar `<targets>.meta.jsonl`
keeps, per target, the prompt the model sees and its token count, for the cost figures.

Server types and what their body holds:
  fastapi  POST /predict         {"prompt": raw input, "max_new_tokens"}  (server applies the template)
  ray      POST /predict         same as fastapi (inference/ray_serve.py)
  tgi      POST /generate        {"inputs": rendered prompt, "parameters": {"max_new_tokens"}}
  vllm     POST /v1/completions  {"model", "prompt": rendered prompt, "max_tokens", "temperature": 0}
  openai   POST /v1/completions  the same with "stream": true: any OpenAI-compatible server (ours, vLLM,
                                 TGI's /v1), timed per token (streaming.py: TTFT, ITL, goodput)
TGI and vLLM serve a merged model and know nothing of our templates, so their bodies carry the
prompt already rendered with the same template (llmhub.prompts).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

from ... import data as data_mod
from ...errors import HubError

SERVERS = {"fastapi": "/predict", "ray": "/predict", "tgi": "/generate", "vllm": "/v1/completions",
           "openai": "/v1/completions"}


def check_server(server: str) -> str:
    if server not in SERVERS:
        raise HubError(f"unknown server type '{server}'; allowed: {', '.join(SERVERS)}")
    return server


def pick_inputs(data_dir: str | Path, task: str, tokenizer, n: int, target_tokens: int = 100) -> list[str]:
    """n raw test inputs of about target_tokens tokens each."""
    if task not in data_mod.TASKS:  # the task table is llmhub/data.py's; custom tasks have no test folder
        raise HubError(f"unknown task '{task}'; allowed: {', '.join(data_mod.TASKS)}")
    spec = data_mod.TASKS[task]
    column = spec.input_column
    rows = data_mod.read_records(Path(data_dir) / spec.folder / spec.test)
    lo, hi = int(target_tokens * 0.8), int(target_tokens * 1.2)
    picked, longer = [], []
    for row in rows:
        text = str(row.get(column, ""))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if lo <= len(ids) <= hi:
            picked.append(text)
        elif len(ids) > hi:
            longer.append(tokenizer.decode(ids[:target_tokens], skip_special_tokens=True))
        if len(picked) >= n:
            break
    picked += longer[: n - len(picked)]
    if not picked:
        raise HubError(f"no test input of task '{task}' has about {target_tokens} tokens")
    return picked[:n]


def render(tokenizer, style: str, task: str, texts: list[str], max_source_length: int = 512) -> list[str]:
    """The prompt the model sees: the fine-tuning template around each input (plain for encoders)."""
    from ...generate import build_prompts

    return build_prompts(tokenizer, style, data_mod.TASKS[task].kind, texts, max_source_length)


def body(server: str, raw: str, prompt: str, max_new_tokens: int | None, model_name: str = "model") -> dict:
    if server in ("fastapi", "ray"):
        return {"prompt": raw, **({"max_new_tokens": max_new_tokens} if max_new_tokens else {})}
    if server == "tgi":
        return {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens or 50}}
    body = {"model": model_name, "prompt": prompt, "max_tokens": max_new_tokens or 50, "temperature": 0}
    if server == "openai":
        body.update(stream=True, stream_options={"include_usage": True})
    return body


def write_targets(path: str | Path, server: str, url: str, raws: list[str], prompts: list[str],
                  tokenizer, max_new_tokens: int | None, model_name: str = "model") -> Path:
    """The Vegeta targets file and its .meta.jsonl sidecar; returns the targets path."""
    check_server(server)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    endpoint = url.rstrip("/") + SERVERS[server]
    lines, meta = [], []
    for raw, prompt in zip(raws, prompts):
        payload = json.dumps(body(server, raw, prompt, max_new_tokens, model_name)).encode()
        lines.append(json.dumps({"method": "POST", "url": endpoint, "body": base64.b64encode(payload).decode(),
                                 "header": {"Content-Type": ["application/json"]}}))
        meta.append(json.dumps({"server": server, "prompt": prompt,
                                "input_tokens": len(tokenizer(prompt)["input_ids"])}))
    path.write_text("\n".join(lines) + "\n")
    meta_path(path).write_text("\n".join(meta) + "\n")
    return path


def meta_path(targets: str | Path) -> Path:
    return Path(str(targets) + ".meta.jsonl")


def read_targets(path: str | Path) -> list[dict]:
    """Targets as {"method", "url", "body": bytes, "headers": {name: value}}."""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"targets file not found: {path}")
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            t = json.loads(line)
            body = base64.b64decode(t.get("body") or b"")
            out.append({"method": t.get("method", "GET"), "url": t["url"], "body": body, "stream": streamed(body),
                        "headers": {k: v[0] if isinstance(v, list) else v for k, v in (t.get("header") or {}).items()}})
        except (json.JSONDecodeError, KeyError, ValueError) as e:
            raise HubError(f"{path}:{i}: not a Vegeta JSON target ({e})") from None
    if not out:
        raise HubError(f"{path} holds no targets")
    return out


def streamed(body: bytes) -> bool:
    """Whether a request body asks for a stream of server-sent events."""
    try:
        return json.loads(body).get("stream") is True
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def read_meta(targets: str | Path) -> list[dict]:
    p = meta_path(targets)
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()] if p.is_file() else []
