"""A rate sweep: for each offered rate, attack (Vegeta when on PATH, else the built-in attacker),
keep the raw results and the JSON report, and add the token counts and cost of that run.

Files per rate R under the sweep folder: `rate_<R>.results.jsonl` (vegeta encode JSON lines) and
`rate_<R>.json` ({"report": Vegeta's JSON report, "summary": our row}).

Cost per 1K tokens = instance $/hour / (achieved throughput x 3600 s x tokens per request) x 1000,
where throughput counts only successful answers and tokens per request = the prompt tokens the model
read + the tokens of the answer it returned, averaged over the successful requests. (The original
used the *offered* rate, which flatters an overloaded server.)
"""
from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from ...errors import HubError
from . import attacker, streaming
from .targets import read_meta, read_targets

NS = attacker.NS


def vegeta_path() -> str | None:
    return shutil.which("vegeta")


def check_rates(rates: list[float]) -> list[float]:
    if not rates:
        raise HubError("give at least one rate (requests per second)")
    for r in rates:
        if not r > 0:
            raise HubError(f"rates must be > 0 requests per second, got {r:g}")
    return sorted(rates)


def check_reachable(url: str) -> None:
    """One clear line when nothing listens there, before any attack starts."""
    import httpx

    try:
        httpx.get(url, timeout=5)
    except httpx.HTTPError as e:
        raise HubError(f"cannot reach {url}: {type(e).__name__}: {str(e) or 'no answer'}; is the server running?") from None


def run_vegeta(targets: Path, rate: float, duration: float, timeout: float, raw: Path) -> tuple[dict, list[dict]]:
    """`vegeta attack | vegeta report -type=json` and the per-request results via `vegeta encode`."""
    vegeta = vegeta_path()
    binary = raw.with_suffix(".bin")
    subprocess.run([vegeta, "attack", f"-targets={targets}", "-format=json", f"-rate={rate:g}",
                    f"-duration={duration:g}s", f"-timeout={timeout:g}s", f"-output={binary}"], check=True)
    rep = json.loads(subprocess.run([vegeta, "report", "-type=json", str(binary)], check=True,
                                    capture_output=True, text=True).stdout)
    lines = subprocess.run([vegeta, "encode", "--to", "json", str(binary)], check=True,
                           capture_output=True, text=True).stdout.splitlines()
    return rep, [json.loads(line) for line in lines if line.strip()]


def answer_text(server: str, body: bytes) -> str:
    """The generated text in a successful response of each server type."""
    if server == "openai":
        return streaming.text_of(body)
    try:
        obj = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return ""
    if server == "vllm":
        return ((obj.get("choices") or [{}])[0]).get("text", "")
    if server == "tgi":
        obj = obj[0] if isinstance(obj, list) and obj else obj
        return obj.get("generated_text", "")
    return obj.get("prediction", "") if isinstance(obj, dict) else ""


def summarise(report: dict, results: list[dict], meta: list[dict], tokenizer, server: str,
              rate: float, dollars_per_hour: float, label: str, slo_ttft: float = float("inf"),
              slo_itl: float = float("inf")) -> dict:
    """One CSV row: offered vs achieved rate, success, latency, tokens and cost (and, for streamed
    requests, TTFT, ITL, output tokens/s and goodput)."""
    ok = [r for r in results if 200 <= r["code"] < 400]
    n_targets = max(len(meta), 1)
    tokens_in = [meta[r["seq"] % n_targets]["input_tokens"] for r in ok] if meta else []
    tokens_out = [len(tokenizer(answer_text(server, base64.b64decode(r.get("body") or "")),
                                add_special_tokens=False)["input_ids"]) for r in ok] if tokenizer else []
    per_request = (sum(tokens_in) + sum(tokens_out)) / len(ok) if ok and tokens_in else None
    thr = report["throughput"]
    cost = dollars_per_hour / (thr * 3600 * per_request) * 1000 if thr > 0 and per_request else None
    lat = report["latencies"]
    return {"label": label, "server": server, "offered_rps": rate, "achieved_rps": round(report["rate"], 6),
            "requests": report["requests"], "success": round(report["success"], 4),
            "throughput_rps": round(thr, 6), "p50_s": lat["50th"] / NS, "p90_s": lat["90th"] / NS,
            "p99_s": lat["99th"] / NS, "max_s": lat["max"] / NS,
            "mean_input_tokens": round(sum(tokens_in) / len(tokens_in), 1) if tokens_in else None,
            "mean_output_tokens": round(sum(tokens_out) / len(tokens_out), 1) if tokens_out else None,
            "tokens_per_s": round(thr * per_request, 2) if per_request else None,
            "dollars_per_hour": dollars_per_hour,
            "cost_per_1k_tokens": cost, "status_codes": report["status_codes"], "kept_up": kept_up(results),
            **(streaming.stats(results, (report["duration"] + report["wait"]) / NS, slo_ttft, slo_itl)
               if server == "openai" else {})}


def kept_up(results: list[dict], tail: float = 2 / 3) -> float | None:
    """The share of the offered rate a server answered while requests arrived: successful answers that
    completed in the last `tail` of the send window, per second, over the rate requests were sent at.
    About 1 for a server that keeps up (in a steady state answers leave as fast as requests arrive); the
    fraction of the rate it can serve when a backlog grows, which a short run's p90 alone can hide (a
    backlog needs time to push the p90 over its bound). None for fewer than 2 requests."""
    starts = [datetime.fromisoformat(r["timestamp"]).timestamp() for r in results]
    if len(starts) < 2 or max(starts) == min(starts):
        return None
    first, last = min(starts), max(starts)
    window = tail * (last - first)
    done = sum(last - window <= s + r["latency"] / NS <= last
               for s, r in zip(starts, results) if 200 <= r["code"] < 400)
    return round(done / window / ((len(starts) - 1) / (last - first)), 4)


def passes(row: dict, min_success: float, p90_bound: float, min_kept_up: float = 0.0) -> bool:
    return (row["success"] >= min_success and row["p90_s"] <= p90_bound
            and (min_kept_up <= 0 or (row.get("kept_up") or 0.0) >= min_kept_up))


def sweep(targets: str | Path, rates: list[float], duration: float, out_dir: str | Path, server: str,
          label: str, tokenizer=None, dollars_per_hour: float = 1.624, timeout: float = 30.0,
          stop_after_fail: bool = False, min_success: float = 0.99, p90_bound: float = float("inf"),
          min_kept_up: float = 0.0, between=None, log=sys.stderr, slo_ttft: float = float("inf"), slo_itl: float = float("inf")) -> list[dict]:
    """Attack at each rate in ascending order; returns the summary rows. With stop_after_fail the
    sweep ends at the first rate that misses min_success or the p90 bound (higher rates would too)."""
    targets = Path(targets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded, meta = read_targets(targets), read_meta(targets)
    use_vegeta = vegeta_path() is not None and not any(t["stream"] for t in loaded)
    if not use_vegeta:
        why = "streamed targets (Vegeta cannot time the first token)" if vegeta_path() else "vegeta not found on PATH"
        print(f"{why}; using the built-in open-loop attacker "
              "(llmhub/serve/loadtest/attacker.py), same report fields", file=log, flush=True)
    rows = []
    for rate in check_rates(rates):
        if between:
            between()  # e.g. wait until the server's queue from the previous rate has drained
        raw = out / f"rate_{rate:g}.results.jsonl"
        if use_vegeta:
            rep, results = run_vegeta(targets, rate, duration, timeout, raw)
        else:
            results = attacker.run_attack(loaded, rate, duration, timeout)
            rep = attacker.report(results)
            results = attacker.public(results)
        raw.write_text("".join(json.dumps(r) + "\n" for r in results))
        row = summarise(rep, results, meta, tokenizer, server, rate, dollars_per_hour, label, slo_ttft, slo_itl)
        row["passed"] = passes(row, min_success, p90_bound, min_kept_up)
        (out / f"rate_{rate:g}.json").write_text(json.dumps({"report": rep, "summary": row}, indent=2) + "\n")
        rows.append(row)
        print(f"{label}: offered {rate:g} rps -> achieved {row['achieved_rps']:.2f}, success "
              f"{row['success']:.1%}, throughput {row['throughput_rps']:.2f} rps, p90 {row['p90_s']:.2f} s, "
              f"codes {row['status_codes']}" + (f", TTFT p50 {row['ttft_p50_s']} s, goodput {row['goodput_rps']} rps"
                                                 if "ttft_p50_s" in row else ""), file=log, flush=True)
        if stop_after_fail and not row["passed"]:
            break
    return rows


def find_sustained(attack, start: float, step: float = 1.5, max_runs: int = 5, down: float = 0.6,
                   precision: float = 1.1) -> list[dict]:
    """Bracket the highest rate whose run passes, in at most max_runs calls of attack(rate) -> row
    (a row with "offered_rps" and "passed"): up by x`step` from `start` while runs pass (down by x`down`
    while they fail), then runs at the geometric mean of the highest passing rate and the lowest failing
    rate above it, each halving the bracket (x1.5 -> x1.22 -> x1.11), until it is within x`precision`.
    The rows, in ascending rate order."""
    if not (start > 0 and step > 1 and 0 < down < 1 and max_runs >= 1 and precision > 1):
        raise HubError(f"rate search needs start > 0, step > 1, 0 < down < 1, max_runs >= 1, precision > 1; "
                       f"got {start:g}, {step:g}, {down:g}, {max_runs}, {precision:g}")
    rows: list[dict] = []

    def passed(rate: float) -> bool:
        rows.append(attack(round(rate, 3)))
        return rows[-1]["passed"]

    rate, factor = start, step if passed(start) else down
    while len(rows) < max_runs:
        good = [r["offered_rps"] for r in rows if r["passed"]]
        bad = [r["offered_rps"] for r in rows if not r["passed"] and good and r["offered_rps"] > max(good)]
        if good and bad:  # bracketed: narrow it
            if min(bad) / max(good) <= precision:
                break
            passed(math.sqrt(max(good) * min(bad)))
            continue
        rate *= factor
        passed(rate)
    return sorted(rows, key=lambda r: r["offered_rps"])
