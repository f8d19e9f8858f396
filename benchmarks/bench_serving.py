"""Head-to-head serving benchmark: the highest sustained request rate of six servers, same weights, same requests.

Servers (`--servers`, default all, run in this order):
  naive               ours, one request per forward pass (server.py --mode naive)
  batched             ours, local engine, micro-batches (--mode batched)
  continuous          ours, local engine, iteration-level batching (--mode continuous)
  transformers-serve  `transformers serve --continuous-batching`, from --transformers_python's environment
  vllm                vLLM's OpenAI server (inference/vllm/launch.py), from --vllm_python's environment
  ours-vllm           ours in front of that same vLLM process (--engine vllm)
Each is a real process on 127.0.0.1 serving SmolLM2-135M (real weights, offline) in the dtype `auto`
resolves to here (bf16 on a CPU with native bf16, else fp32), with --threads compute threads. Every
server gets the same requests: `POST /v1/completions` with the summarization template around a SAMSum
test dialogue of about 100 tokens, greedy, up to 50 new tokens, streamed (so time to first token is
measured the same way everywhere: llmhub/serve/loadtest/streaming.py).

Per server: one request alone (S1), then --burst requests at once (their throughput C is the
"N at once" figure, and the search's yardstick), then open-loop constant-rate runs (llmhub/serve/
loadtest/rates.py) from --start x C, up by x--step while runs pass, then bisecting between the
last pass and the first fail until they are within x--precision (at most --max_runs runs). A rate is
*sustained* when >= 99 % of its requests succeed, the p90 latency is <= --p90_bound s (the same bound
for every server) and the server kept up: it answered >= --min_kept_up of the offered rate while the
requests arrived (`kept_up` in rates.py). The last condition matters: in a 15-s run, a server that
answers 0.66 of 1.04 requests/s builds a backlog too slowly to push its p90 over 10 s. Runs last 30 s:
a micro-batching server answers in bursts (one batch every ~2-4 s here) and needs a few batches to
grow them to the offered rate, so in 15-s runs its `kept_up` moved by +-0.1 from run to run.
The p90 bound is 10 s: ~5 times one request's latency here, and a failing run ends at most 2 x 10 s
after its last request. vLLM's prefix caching is off (the runs repeat prompts; ours has none).

The search brackets a rate to x--precision (1.1), too coarse to tell a 0.9 ratio from 1.0, and two
identical runs moved a ratio by 7 %. So after it each server also gets --saturate (48) requests at
once, --repeats (3) times: their throughput (answers/s) is its saturated throughput, printed as
median +- spread (half the range, relative), and each ratio is also given on medians of it, with the
spread of the ratio over the repeats.

Measured apart, the two sides of a ratio also see the machine drift between them: vLLM's own
saturated throughput moved 6 % between two identical runs. So once both sides of a ratio have been
measured (the best of its top side by median saturated throughput), both run at once (the one not
running is started again; vLLM is shared by its two servers) for --pairs (5) rounds, each sending
--saturate requests at once to one side and then to the other (the order swapped every round),
everything drained in between; the ratio of each round's two throughputs, median over the rounds
with its spread, is the *paired* ratio. A drift of the machine falls on both sides of a round.

Writes results/serving/bench_serving.{json,csv} (every run; the JSON adds S1, burst, TTFT, load
averages, provenance), raw per-request results under results/serving/bench/<server>/ with each
server's log, and assets/serving_smollm2_samsum.png. A server that cannot start is recorded as
unavailable with the reason, and the others still run. Last line, as ratios of sustained rates
(n/a, with the reason printed above it, when a side is missing), then of saturated throughputs:
  speedup_vs_naive=<best of batched, continuous, ours-vllm / naive> gateway_ratio=<ours-vllm / vllm>
  local_vs_peer=<best of batched, continuous / transformers-serve>
  saturated: speedup_vs_naive=<ratio>+-<spread> gateway_ratio=... local_vs_peer=...
  paired: speedup_vs_naive=<ratio>+-<spread> gateway_ratio=... local_vs_peer=...

  python benchmarks/bench_serving.py --data_dir ../shared/data                 # all six, ~25-30 min here
  python benchmarks/bench_serving.py --data_dir ../shared/data --servers batched,continuous,transformers-serve
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from llmhub.errors import HubError, run

ROOT = Path(__file__).resolve().parents[1]
SERVERS = {"naive": "ours, --mode naive", "batched": "ours, --mode batched (micro-batches)",
           "continuous": "ours, --mode continuous", "transformers-serve": "transformers serve --continuous-batching",
           "vllm": "vLLM (raw)", "ours-vllm": "ours in front of vLLM (--engine vllm)"}
OURS, LOCAL = ("naive", "batched", "continuous", "ours-vllm"), ("batched", "continuous")
# each ratio: (its top side, the best of which is compared, its bottom side)
PAIRS = {"speedup_vs_naive": (OURS[1:], "naive"), "gateway_ratio": (("ours-vllm",), "vllm"),
         "local_vs_peer": (LOCAL, "transformers-serve")}


def parse_args(argv=None):
    from llmhub.serve.vllm_server import VENV_PYTHON

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="data", help="data folder holding samsum/test.jsonl")
    p.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset (default: all)")
    p.add_argument("--model", default="smollm2-135m", help="served model (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=50, help="tokens generated per request (default: %(default)s)")
    p.add_argument("--input_tokens", type=int, default=100, help="tokens per dialogue (default: %(default)s)")
    p.add_argument("--p90_bound", type=float, default=10.0, help="p90 latency bound of a sustained rate, s "
                   "(default: %(default)s); a request times out after twice this")
    p.add_argument("--duration", type=float, default=30, help="seconds per rate, at least (default: %(default)s)")
    p.add_argument("--requests", type=int, default=16, help="requests per rate, at least (default: %(default)s)")
    p.add_argument("--burst", type=int, default=8,
                   help="requests sent at once to size the search (default: %(default)s)")
    p.add_argument("--saturate", type=int, default=48, help="requests sent at once, after the search, to "
                   "measure saturated throughput (default: %(default)s: three of our micro-batches)")
    p.add_argument("--repeats", type=int, default=3, help="saturation measurements per server; their spread is "
                   "printed (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=5, help="rounds of each ratio's paired measurement, once both its "
                   "sides were measured; 0 skips them (default: %(default)s)")
    p.add_argument("--start", type=float, default=0.7, help="first rate, x the burst throughput (default: %(default)s)")
    p.add_argument("--step", type=float, default=1.5, help="rate factor between runs (default: %(default)s)")
    p.add_argument("--max_runs", type=int, default=6, help="rate runs per server, at most (default: %(default)s)")
    p.add_argument("--precision", type=float, default=1.1,
                   help="stop when the passing and failing rates are within this factor (default: %(default)s)")
    p.add_argument("--min_kept_up", type=float, default=0.9, help="share of the offered rate a server must answer "
                   "while requests arrive (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="compute threads per server (default: %(default)s): on "
                   "2 cores the load generator and vLLM's API process need the other one")
    p.add_argument("--max_batch_size", type=int, default=16, help="ours, batched and continuous (default: %(default)s)")
    p.add_argument("--max_wait_ms", type=float, default=200, help="ours, batched (default: %(default)s)")
    p.add_argument("--max_queue", type=int, default=64, help="ours (default: %(default)s)")
    p.add_argument("--upstream_in_flight", type=int, default=64, help="ours-vllm: requests in flight to vLLM "
                   "(server.py --max_batch_size; vLLM batches them) (default: %(default)s)")
    p.add_argument("--vllm_python", default=str(VENV_PYTHON), help="python of vLLM's environment "
                   "(default: inference/vllm/.venv, made by `make -C inference/vllm venv`)")
    p.add_argument("--kv_cache_gib", type=float, default=2, help="vLLM's KV cache (default: %(default)s)")
    p.add_argument("--transformers_python", default=sys.executable,
                   help="python of the environment whose `transformers serve` runs (default: this one)")
    p.add_argument("--startup_timeout", type=float, default=600,
                   help="seconds a server may take to start (default: %(default)s)")
    p.add_argument("--cost_per_hour", type=float, default=1.624, help="USD/hour for the cost column "
                   "(default: %(default)s, the seeds' g5.4xlarge; this CPU machine has no list price)")
    p.add_argument("--out", default=str(ROOT / "results" / "serving"), help="results folder")
    p.add_argument("--plot", default=str(ROOT / "assets" / "serving_smollm2_samsum.png"))
    args = p.parse_args(argv)
    unknown = [s for s in args.servers.split(",") if s not in SERVERS]
    if unknown or not args.servers:
        raise SystemExit(f"error: unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)}")
    args.servers = [s for s in SERVERS if s in args.servers.split(",")]  # vLLM's two last: one vLLM process
    return args


def wait_idle(url: str, busy, limit_s: float = 120.0) -> None:
    """Until `busy(url)` (requests queued or running) is 0, so one run's backlog never leaks into the next."""
    deadline = time.monotonic() + limit_s
    while busy(url) and time.monotonic() < deadline:
        time.sleep(0.5)


def ours_busy(url: str) -> int:
    import httpx

    return httpx.get(url + "/health", timeout=10).json().get("in_flight", 0)


def vllm_busy(url: str) -> int:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    return int(sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name in ("vllm:num_requests_running", "vllm:num_requests_waiting")))


def vllm_url(args, dtype: str, logs: Path, env: dict, keep: ExitStack, upstream: dict) -> str:
    """vLLM's URL: started once, for both vLLM servers, and kept running in `keep`; a failure to
    start is remembered in `upstream` and raised again for the second."""
    from llmhub.serve.process import ServerProcess

    launch = ROOT / "inference" / "vllm" / "launch.py"  # the entry point users run (a script, not the module)
    if not upstream:
        try:
            if not Path(args.vllm_python).is_file():
                raise HubError(f"no vLLM environment: {args.vllm_python} does not exist "
                               "(make -C inference/vllm venv, or pass --vllm_python)")
            upstream["url"] = keep.enter_context(ServerProcess(
                ["--model", args.model, "--dtype", dtype, "--python", args.vllm_python, "--kv_cache_gib",
                 f"{args.kv_cache_gib:g}", "--no_prefix_caching"], script=launch, health="/v1/models",
                log_path=logs / "vllm.log", startup_timeout=args.startup_timeout,
                # its compute threads on cores 0..threads-1; vLLM's API process runs apart
                env={**env, "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, range(args.threads)))})).url
        except HubError as e:
            upstream["error"] = f"vLLM did not start: {e}"
    if "error" in upstream:
        raise HubError(upstream["error"])
    return upstream["url"]


@contextmanager
def serve(name: str, args, folder: Path, dtype: str, logs: Path, keep: ExitStack, upstream: dict, tag: str = ""):
    """Start server `name` (and vLLM, kept in `keep` for both vLLM servers), its log logs/<name><tag>.log;
    yields (URL, drain)."""
    from llmhub.serve.process import ServerProcess

    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    ours = ["--model", args.model, "--task", "summarization", "--max_new_tokens", str(args.max_new_tokens),
            "--max_queue", str(args.max_queue), "--threads", str(args.threads)]
    with ExitStack() as stack:
        def start(label, server_args, **kw):
            return stack.enter_context(ServerProcess(server_args, log_path=logs / f"{label}{tag}.log", env=env,
                                                     startup_timeout=args.startup_timeout, **kw))

        if name in ("vllm", "ours-vllm"):
            url = vllm_url(args, dtype, logs, env, keep, upstream)
            if name == "vllm":
                yield url, lambda: wait_idle(url, vllm_busy)
                return
            srv = start(name, ours + ["--engine", "vllm", "--vllm_url", url,
                                      "--max_batch_size", str(args.upstream_in_flight)])
        elif name == "transformers-serve":
            # run beside the model folder and name it relatively: the same model name as the others
            srv = start(name, ["--continuous-batching", "--dtype", dtype, "--log-level", "warning", folder.name],
                        command=[args.transformers_python, "-m", "transformers.cli.transformers", "serve"],
                        cwd=folder.parent)
            yield srv.url, lambda: None  # no queue to read; a stream the client dropped is cancelled
            return
        else:
            srv = start(name, ours + ["--mode", name, "--max_batch_size", str(args.max_batch_size),
                                      "--max_wait_ms", str(args.max_wait_ms)])
        yield srv.url, lambda: wait_idle(srv.url, ours_busy)


def at_once(loaded: list[dict], n: int, what: str) -> tuple[list[dict], dict]:
    """n requests sent within n ms: their results and report; any failure is an error naming `what`."""
    from llmhub.serve.loadtest import attacker

    res = attacker.run_attack(loaded, 1000.0, n / 1000.0, timeout=600)
    rep = attacker.report(res)
    if rep["success"] < 1:
        raise HubError(f"{what} requests failed: codes {rep['status_codes']}, "
                       f"{'; '.join(rep['errors'])[:300] or 'no error text'}")
    return res, rep


def calibrate(loaded: list[dict], burst: int) -> dict:
    """A warm-up request, one request alone (S1), then `burst` at once: their throughput."""
    from llmhub.serve.loadtest import attacker

    at_once(loaded, 1, "calibration")
    one, _ = at_once(loaded, 1, "calibration")
    res, rep = at_once(loaded, burst, "calibration")
    return {"s1_seconds": one[0]["latency"] / attacker.NS,
            "s1_ttft_seconds": (one[0].get("ttft_ns") or 0) / attacker.NS,
            "burst": burst, "burst_throughput_rps": round(rep["throughput"], 4),
            "burst_p90_s": rep["latencies"]["90th"] / attacker.NS}


def saturated(loaded: list[dict], n: int, repeats: int, drain, what: str = "saturation") -> list[float]:
    """Throughput (answers/s) of n requests sent at once, `repeats` times, drained in between: what
    the server completes when it always has work. Steadier than the sustained rate, whose search
    stops at a x--precision bracket."""
    out = []
    for _ in range(repeats):
        drain()
        out.append(round(at_once(loaded, n, what)[1]["throughput"], 4))
    return out


def paired(loaded: dict[str, list[dict]], n: int, rounds: int, drain) -> dict[str, list[float]]:
    """Saturated throughput of two servers measured back to back, `rounds` times, the order swapped
    every round (a drift in the machine falls on both sides), all drained before each batch."""
    out: dict[str, list[float]] = {k: [] for k in loaded}
    for i in range(rounds):
        for name in list(loaded)[::-1 if i % 2 else 1]:
            out[name] += saturated(loaded[name], n, 1, drain, "paired saturation")
    return out


def paired_ratio(runs: dict[str, list[float]], top: str, bottom: str) -> tuple[float, float]:
    """top / bottom of each round, median over the rounds, and the spread of those ratios."""
    ratios = [t / b for t, b in zip(runs[top], runs[bottom])]
    return statistics.median(ratios), spread(ratios)


def sides(servers: dict, top: tuple[str, ...], bottom: str) -> tuple[str, str] | None:
    """The best of `top` by median saturated throughput, and `bottom`; None when a side has no measurement."""
    ups = [n for n in top if (servers.get(n) or {}).get("saturated_rps")]
    if not ups or not (servers.get(bottom) or {}).get("saturated_rps"):
        return None
    return max(ups, key=lambda n: statistics.median(servers[n]["saturated_rps"])), bottom


def spread(values: list[float]) -> float:
    """Half the range of values, relative to their median."""
    return (max(values) - min(values)) / 2 / statistics.median(values)


def saturated_ratio(servers: dict, top: tuple[str, ...], bottom: str) -> tuple[float, float] | None:
    """median saturated throughput of the best of `top` / that of `bottom`, and the ratio's spread
    over the repeats (half the range min(top)/max(bottom) .. max(top)/min(bottom), relative); None
    when a side has no measurement."""
    if not (pair := sides(servers, top, bottom)):
        return None
    hi, lo = (servers[n]["saturated_rps"] for n in pair)
    value = statistics.median(hi) / statistics.median(lo)
    return value, (max(hi) / min(lo) - min(hi) / max(lo)) / 2 / value


def peer_version(name: str, args, upstream: dict) -> str | None:
    import httpx

    if name == "vllm":
        return httpx.get(upstream["url"] + "/version", timeout=10).json().get("version")
    if name == "transformers-serve":
        return subprocess.run([args.transformers_python, "-c", "from importlib.metadata import version as v; "
                               "print(v('transformers'))"], capture_output=True, text=True).stdout.strip() or None
    return None


def table_row(s: dict) -> str:
    """sustained rate ('+': a lower bound), kept_up, p90 and median TTFT there, S1 and the burst's throughput."""
    b, dash = s["sustained"], "-"
    sustained = f"{b['offered_rps']:.3f}" + ("" if s["bracketed"] else "+") if b else "none"
    p90 = f"{b['p90_s']:.2f} s" if b else dash
    ttft = f"{b['ttft_p50_s']:.2f} s" if b and b.get("ttft_p50_s") is not None else dash
    kept = f"{b['kept_up']:.2f}" if b and b.get("kept_up") is not None else dash
    sat = s.get("saturated_rps")
    sat = f"{statistics.median(sat):7.3f} rps +-{spread(sat):.1%}" if sat else dash
    return (f"{sustained:>10s} {kept:>7s} {p90:>7s} {ttft:>9s} {s['s1_seconds']:5.2f} s "
            f"{s['burst_throughput_rps']:7.3f} rps  {sat}")


def ratio(servers: dict, top: tuple[str, ...], bottom: str, what: str) -> tuple[float | None, str]:
    """best sustained rate of `top` / that of `bottom`, or None and why not."""
    def rate(name):
        s = servers.get(name)
        if s is None:
            return None, f"{name} not run (see --servers)"
        if not s["available"]:
            return None, f"{name} unavailable: {s['reason']}"
        if not s["sustained"]:
            return None, f"{name} sustained no rate it was offered"
        return s["sustained"]["offered_rps"], ""

    ups = [rate(n) for n in top]
    best = max((r for r, _ in ups if r), default=None)
    down, why = rate(bottom)
    if best is None or down is None:
        return None, f"{what} n/a: " + "; ".join(([w for _, w in ups] if best is None else []) + ([why] if why else []))
    return best / down, ""


def main() -> None:
    args = parse_args()

    def go():
        import httpx

        from llmhub.serve.loadtest import charts, rates, targets
        from llmhub import models
        from llmhub.results import provenance, write_json

        if not (0 <= args.min_kept_up <= 1 and args.precision > 1 and args.max_runs >= 1 and args.saturate >= 1
                and args.repeats >= 1 and args.pairs >= 0):
            raise HubError(f"need 0 <= --min_kept_up <= 1, --precision > 1, --max_runs >= 1, --saturate >= 1, "
                           f"--repeats >= 1 and --pairs >= 0; got {args.min_kept_up:g}, {args.precision:g}, "
                           f"{args.max_runs}, {args.saturate}, {args.repeats}, {args.pairs}")
        if not (Path(args.data_dir) / "samsum" / "test.jsonl").is_file():
            raise HubError(f"{args.data_dir}/samsum/test.jsonl not found; pass --data_dir")
        t0 = time.monotonic()
        out, logs = Path(args.out), Path(args.out) / "bench"
        folder = Path(models.resolve_path(args.model)).resolve()
        dtype = str(models.resolve_dtype("auto")).removeprefix("torch.")
        tok = models.load_tokenizer(str(folder), "causal")
        raws = targets.pick_inputs(args.data_dir, "summarization", tok, 64, args.input_tokens)
        prompts = targets.render(tok, "causal", "summarization", raws)
        # no machine's layout in the results: paths relative to the repository
        shown = {k: (os.path.relpath(v, ROOT) if k in ("out", "plot", "vllm_python", "transformers_python") else v)
                 for k, v in vars(args).items()}
        record = {"args": shown, "dtype": dtype, "load_average_start": os.getloadavg(), "servers": {}, "paired": {}}
        rows = []

        def say(text):
            print(f"[{(time.monotonic() - t0) / 60:5.1f} min] {text}", flush=True)

        def pair_rounds(key: str, pair: tuple[str, str], name: str, url: str, drain, keep, upstream) -> dict:
            """Both sides of a ratio at once (`name` is running; the other side is started again) and
            their paired rounds."""
            say(f"{key}: {args.pairs} paired rounds of {args.saturate} at once, {' and '.join(pair)}")
            with ExitStack() as again:
                both = {n: (url, drain) if n == name else again.enter_context(
                    serve(n, args, folder, dtype, logs, keep, upstream, tag=".paired")) for n in pair}
                runs = {n: targets.read_targets(targets.write_targets(
                    logs / f"{n}.paired.targets.jsonl", "openai", u, raws, prompts, tok, args.max_new_tokens,
                    folder.name)) for n, (u, _) in both.items()}
                for n in pair:
                    at_once(runs[n], 1, "warm-up")
                rps = paired(runs, args.saturate, args.pairs, lambda: [d() for _, d in both.values()])
            value = paired_ratio(rps, *pair)
            say(f"{key}: paired {value[0]:.3f} +-{value[1]:.1%}; " +
                "; ".join(f"{n} {', '.join(map(str, v))} rps" for n, v in rps.items()))
            return {"servers": pair, "rps": rps, "ratio": value}

        say(f"{args.model} in {dtype}, {args.threads} thread(s) per server; servers: {', '.join(args.servers)}")
        upstream: dict = {}
        with ExitStack() as keep:  # vLLM, once for both vLLM servers
            for name in args.servers:
                entry = record["servers"][name] = {"description": SERVERS[name], "available": False,
                                                   "reason": None, "sustained": None,
                                                   "load_average_before": os.getloadavg()}
                started = time.monotonic()
                for old in (logs / name).glob("rate_*"):  # an earlier run's rates would read as this one's
                    old.unlink()
                say(f"{name}: starting ({SERVERS[name]})")
                try:
                    with serve(name, args, folder, dtype, logs, keep, upstream) as (url, drain):
                        tfile = targets.write_targets(logs / f"{name}.targets.jsonl", "openai", url, raws, prompts,
                                                      tok, args.max_new_tokens, folder.name)
                        loaded = targets.read_targets(tfile)
                        entry.update(available=True, version=peer_version(name, args, upstream),
                                     **calibrate(loaded, args.burst))
                        say(f"{name}: S1 {entry['s1_seconds']:.2f} s, {args.burst} at once "
                            f"{entry['burst_throughput_rps']:.2f} rps; searching from "
                            f"{args.start * entry['burst_throughput_rps']:.3f} rps")
                        found = rates.find_sustained(lambda rate: rates.sweep(
                            tfile, [rate], max(args.duration, args.requests / rate), logs / name, "openai", name, tok,
                            args.cost_per_hour, timeout=2 * args.p90_bound, p90_bound=args.p90_bound,
                            min_kept_up=args.min_kept_up, between=drain)[0], args.start * entry["burst_throughput_rps"],
                            args.step, args.max_runs, precision=args.precision)
                        entry["saturated_rps"] = saturated(loaded, args.saturate, args.repeats, drain)
                        for key, (top, bottom) in PAIRS.items():  # a ratio's sides all measured: paired rounds
                            last = [n for n in args.servers if n in (*top, bottom)][-1:] == [name]
                            pair = sides(record["servers"], top, bottom)
                            if args.pairs and last and pair:
                                try:
                                    record["paired"][key] = pair_rounds(key, pair, name, url, drain, keep, upstream)
                                except (HubError, httpx.HTTPError) as e:  # the ratio's, not this server's failure
                                    record["paired"][key] = {"servers": pair, "error": f"{type(e).__name__}: {e}"}
                                    say(f"{key}: paired rounds failed: {record['paired'][key]['error']}")
                except (HubError, httpx.HTTPError) as e:  # did not start, failed its first requests or died: recorded
                    entry["reason"] = str(e) if isinstance(e, HubError) else f"{type(e).__name__}: {e}"
                    say(f"{name}: unavailable: {entry['reason']}")
                    continue
                finally:
                    entry["seconds"] = round(time.monotonic() - started, 1)
                rows += found
                best = entry["sustained"] = charts.sustained(found, name)
                entry["rates"] = [r["offered_rps"] for r in found]
                # a lower bound when no rate above the sustained one failed
                entry["bracketed"] = any(not r["passed"] and (not best or r["offered_rps"] > best["offered_rps"])
                                         for r in found)
                entry["ttft_p50_at_sustained_s"] = best["ttft_p50_s"] if best else None
                say(f"{name}: sustained {best['offered_rps'] if best else 'no'} rps" +
                    ("" if entry["bracketed"] else " (no failing rate above it: a lower bound)") +
                    f"; {args.saturate} at once: {', '.join(map(str, entry['saturated_rps']))} rps")
        record["load_average_end"] = os.getloadavg()
        record["seconds"] = round(time.monotonic() - t0, 1)
        record["provenance"] = provenance(seed=0)
        record["rows"] = rows
        servers = record["servers"]
        figures = {k: ratio(servers, top, bottom, k) for k, (top, bottom) in PAIRS.items()}
        record.update({k: v for k, (v, _) in figures.items()})
        record["saturated"] = {k: saturated_ratio(servers, *pair) for k, pair in PAIRS.items()}
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "bench_serving.json", record)
        charts.write_csv(rows, out / "bench_serving.csv")
        if rows:
            charts.plot(rows, args.plot, f"{args.model} ({dtype}), SAMSum ~{args.input_tokens}-token dialogues, "
                       f"{args.max_new_tokens} new tokens, streamed; {os.cpu_count()}-core CPU, {args.threads} "
                       "thread(s) per server", args.p90_bound)

        print(f"\nsustained = highest offered rate with >= 99 % success, p90 <= {args.p90_bound:g} s and >= "
              f"{args.min_kept_up:.0%} of it answered while requests arrived; "
              f"load average {record['load_average_start'][0]:.2f} -> {record['load_average_end'][0]:.2f}")
        print(f"{'server':19s} {'sustained':>10s} {'kept up':>7s} {'p90':>7s} {'TTFT p50':>9s} {'S1':>7s} "
              f"{args.burst:>3d} at once  {args.saturate} at once x{args.repeats} (median, spread)")
        for name, s in servers.items():
            print(f"{name:19s} " + (table_row(s) if s["available"] else f"unavailable: {s['reason']}"))
        print(f"results: {out / 'bench_serving.json'}, plot: {args.plot}; {record['seconds'] / 60:.1f} min")
        for _, why in figures.values():
            if why:
                print(why)
        for key, got in record["paired"].items():
            print(f"{key}, paired rounds of {args.saturate} at once (rps): " + ("; ".join(
                f"{n} {', '.join(map(str, v))}" for n, v in got["rps"].items()) if "rps" in got else got["error"]))

        def interval(v):
            return "n/a" if v is None else f"{v[0]:.2f}+-{v[1]:.1%}"
        sat, pair = record["saturated"], record["paired"]
        print(" ".join(f"{k}={'n/a' if v is None else f'{v:.2f}'}" for k, (v, _) in figures.items()) + " saturated: " +
              " ".join(f"{k}={interval(sat[k])}" for k in figures) + " paired: " +
              " ".join(f"{k}={interval(pair.get(k, {}).get('ratio'))}" for k in figures))

    run(go)


if __name__ == "__main__":
    main()
