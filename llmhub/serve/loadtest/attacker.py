"""An open-loop constant-rate HTTP attacker (asyncio + httpx) that writes Vegeta's formats.

Open loop, as Vegeta: request i starts at t0 + i / rate whether or not earlier ones have been
answered, so a slow server faces a growing backlog instead of a politely waiting client (a closed
loop would hide overload). Targets are used round-robin in file order, as Vegeta does.

Results are written like `vegeta encode --to json` (one JSON object per request: seq, code,
timestamp, latency in ns, bytes, error, body in base64) and summarised like
`vegeta report -type=json`: latencies (ns) min/mean/50th/90th/95th/99th/max, rate (requests per
second sent), throughput (successful requests per second, over duration + wait), success (share of
2xx/3xx), status_codes and the distinct errors.
"""
from __future__ import annotations

import asyncio
import base64
import math
import time
from datetime import datetime, timezone

import httpx

from . import streaming

NS = 1_000_000_000


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


async def _one(client: httpx.AsyncClient, seq: int, target: dict) -> dict:
    wall = time.time()
    start = time.perf_counter()
    code, err, body, extra = 0, "", b"", {}
    try:
        if target.get("stream"):  # a streamed OpenAI request: also TTFT, ITL and tokens
            code, body, extra = await streaming.request(client, target, start)
        else:
            r = await client.request(target["method"], target["url"], content=target["body"], headers=target["headers"])
            code, body = r.status_code, r.content
        if not 200 <= code < 400:
            err = f"{code} {httpx.codes.get_reason_phrase(code)}"
    except httpx.TimeoutException:
        err = f"{target['method']} {target['url']}: timeout"
    except httpx.HTTPError as e:
        err = f"{target['method']} {target['url']}: {type(e).__name__}: {e}"
    latency = time.perf_counter() - start
    return {"attack": "", "seq": seq, "code": code, "timestamp": _iso(wall), "_start": wall,
            "latency": int(latency * NS), "bytes_out": len(target["body"]), "bytes_in": len(body),
            "error": err, "body": base64.b64encode(body).decode(), "method": target["method"],
            "url": target["url"], **extra}


async def attack(targets: list[dict], rate: float, duration: float, timeout: float = 30.0,
                 max_connections: int = 1000) -> list[dict]:
    """Send round(rate * duration) requests at a constant rate; every result, in seq order."""
    n = max(1, round(rate * duration))
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = time.perf_counter() + 0.05
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(client, i, targets[i % len(targets)])))
        return list(await asyncio.gather(*tasks))


def run_attack(targets: list[dict], rate: float, duration: float, timeout: float = 30.0) -> list[dict]:
    return asyncio.run(attack(targets, rate, duration, timeout))


def _quantile(sorted_ns: list[int], q: float) -> int:
    """Nearest-rank quantile, in ns: the smallest latency with at least q of all at or below it."""
    if not sorted_ns:
        return 0
    return sorted_ns[min(len(sorted_ns) - 1, max(0, math.ceil(q * len(sorted_ns)) - 1))]


def report(results: list[dict]) -> dict:
    """`vegeta report -type=json` of a list of results."""
    lat = sorted(r["latency"] for r in results)
    starts = [r["_start"] for r in results] if results and "_start" in results[0] else [
        datetime.fromisoformat(r["timestamp"]).timestamp() for r in results]
    ends = [s + r["latency"] / NS for s, r in zip(starts, results)]
    earliest, latest, end = min(starts), max(starts), max(ends)
    duration, wait = latest - earliest, end - latest
    ok = sum(200 <= r["code"] < 400 for r in results)
    codes: dict[str, int] = {}
    for r in results:
        codes[str(r["code"])] = codes.get(str(r["code"]), 0) + 1
    n = len(results)
    bytes_in, bytes_out = sum(r["bytes_in"] for r in results), sum(r["bytes_out"] for r in results)
    return {
        "latencies": {"total": sum(lat), "mean": sum(lat) // max(n, 1), "50th": _quantile(lat, 0.5),
                      "90th": _quantile(lat, 0.9), "95th": _quantile(lat, 0.95), "99th": _quantile(lat, 0.99),
                      "max": lat[-1] if lat else 0, "min": lat[0] if lat else 0},
        "bytes_in": {"total": bytes_in, "mean": bytes_in / max(n, 1)},
        "bytes_out": {"total": bytes_out, "mean": bytes_out / max(n, 1)},
        "earliest": _iso(earliest), "latest": _iso(latest), "end": _iso(end),
        "duration": int(duration * NS), "wait": int(wait * NS), "requests": n,
        "rate": n / duration if duration > 0 else 0.0,
        "throughput": ok / (duration + wait) if duration + wait > 0 else 0.0,
        "success": ok / max(n, 1), "status_codes": codes,
        "errors": sorted({r["error"] for r in results if r["error"]}),
    }


def public(results: list[dict]) -> list[dict]:
    """Results without private fields, as `vegeta encode --to json` writes them."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
