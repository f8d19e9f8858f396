"""What a user of a streamed OpenAI-compatible server feels, per request and per run.

Per request (a `stream: true` body): time to first token (TTFT, from sending the request to the
first event carrying text) and inter-token latency (ITL: (last token's time - first token's) /
(tokens - 1), what `vllm bench serve` calls TPOT), and the generated tokens (the server's `usage`
when it sends one, else one per text event). Per run: their p50/p90, output tokens per second,
and goodput: the requests per second that succeeded within the SLO (TTFT <= --slo_ttft and ITL <=
--slo_itl), as `vllm bench serve --goodput` counts them. Vegeta cannot time a first token, so
streamed targets always go through the built-in attacker.
"""
from __future__ import annotations

import json
import math
import time

import httpx

NS = 1_000_000_000


def _event(line: str) -> dict | None:
    if not line.startswith("data: {"):
        return None
    try:
        return json.loads(line[6:])
    except json.JSONDecodeError:
        return None


def _has_text(event: dict) -> bool:
    return any(c.get("text") or (c.get("delta") or {}).get("content") for c in event.get("choices") or [])


async def request(client: httpx.AsyncClient, target: dict, start: float) -> tuple[int, bytes, dict]:
    """(status, the raw event stream, {"ttft_ns", "itl_ns", "output_tokens"}) of one streamed request."""
    times, usage, lines = [], None, []
    async with client.stream(target["method"], target["url"], content=target["body"], headers=target["headers"]) as r:
        async for line in r.aiter_lines():
            lines.append(line)
            event = _event(line)
            if event is None:
                continue
            if _has_text(event):
                times.append(time.perf_counter())
            usage = (event.get("usage") or {}).get("completion_tokens", usage)
        code = r.status_code
    tokens = usage if usage is not None else len(times)
    extra = {"ttft_ns": int((times[0] - start) * NS) if times else None,
             "itl_ns": int((times[-1] - times[0]) / (tokens - 1) * NS) if times and tokens > 1 else None,
             "output_tokens": tokens}
    return code, "\n".join(lines).encode(), extra


def text_of(body: bytes) -> str:
    """The generated text of a recorded event stream."""
    out = []
    for line in body.decode(errors="replace").splitlines():
        event = _event(line)
        for c in (event or {}).get("choices") or []:
            out.append(c.get("text") or (c.get("delta") or {}).get("content") or "")
    return "".join(out)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)  # nearest rank, as the attacker's latency quantiles
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def stats(results: list[dict], seconds: float, slo_ttft: float, slo_itl: float) -> dict:
    """Run-level TTFT/ITL quantiles (s), output tokens/s and goodput over `seconds` (duration + wait)."""
    ok = [r for r in results if 200 <= r["code"] < 400 and r.get("ttft_ns") is not None]
    ttft = [r["ttft_ns"] / NS for r in ok]
    itl = [r["itl_ns"] / NS for r in ok if r.get("itl_ns") is not None]
    good = [r for r in ok if r["ttft_ns"] / NS <= slo_ttft and (r.get("itl_ns") or 0) / NS <= slo_itl]
    tokens = sum(r.get("output_tokens") or 0 for r in ok)
    return {"ttft_p50_s": _quantile(ttft, 0.5), "ttft_p90_s": _quantile(ttft, 0.9),
            "itl_p50_s": _quantile(itl, 0.5), "itl_p90_s": _quantile(itl, 0.9),
            "output_tokens_per_s": round(tokens / seconds, 3) if seconds > 0 else None,
            "goodput_rps": round(len(good) / seconds, 6) if seconds > 0 else None,
            "slo_ttft_s": slo_ttft if math.isfinite(slo_ttft) else None,
            "slo_itl_s": slo_itl if math.isfinite(slo_itl) else None}
