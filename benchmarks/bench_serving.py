"""Naive vs batched inference server, same model, same requests: the highest sustained request rate.

SmolLM2-135M (real weights, offline) summarises SAMSum test dialogues of about 100 tokens with up to
50 new tokens, as in the seeds' summarization load tests. Each mode runs as a real uvicorn process
(inference/server.py) and faces an open-loop constant-rate attack (Vegeta when on PATH, else the
built-in attacker) at rising rates. A rate is *sustained* when >= 99 % of its requests succeed and
the p90 latency is within --p90_bound seconds (the same bound for both modes); the sweep of a mode
stops at its first failing rate (and steps down when its first rate fails). Rates are multiples of
the measured one-request service time S1 (naive: 1-2 / S1, batched: 3-8 / S1), so the sweep fits
machines of any speed; every run sends at least --requests requests (24), so a backlog that grows
at an unsustainable rate shows in its p90.

Writes results/serving/bench_serving.{json,csv}, raw per-request results under
results/serving/bench/, and the plot assets/serving_smollm2_samsum.png. Last line:
`speedup=<batched sustained rate / naive sustained rate>`.

  python benchmarks/bench_serving.py --data_dir ../shared/data
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from llmhub.cli import run
from llmhub.errors import HubError

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="data", help="data folder holding samsum/test.jsonl")
    p.add_argument("--model", default="smollm2-135m", help="served model (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=50, help="tokens generated per request (default: %(default)s)")
    p.add_argument("--input_tokens", type=int, default=100, help="tokens per dialogue (default: %(default)s)")
    p.add_argument("--duration", type=float, default=20, help="seconds per rate, at least (default: %(default)s)")
    p.add_argument("--requests", type=int, default=24, help="requests per rate, at least: too few and a short "
                   "run hides a backlog that is growing (default: %(default)s)")
    p.add_argument("--p90_bound", type=float, default=30.0, help="p90 latency bound, s; 30 s is Vegeta's "
                   "default request timeout (default: %(default)s)")
    p.add_argument("--naive_grid", default="1,1.25,1.5,2", help="naive rates x 1/S1 (default: %(default)s)")
    p.add_argument("--batched_grid", default="3,4,5,6,8", help="batched rates x 1/S1 (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per server (default: %(default)s): on a "
                   "2-core machine shared with other jobs, 2 threads oversubscribe the cores and run ~6x slower")
    p.add_argument("--max_batch_size", type=int, default=16, help="batched mode (default: %(default)s)")
    p.add_argument("--max_wait_ms", type=float, default=200, help="batched mode (default: %(default)s)")
    p.add_argument("--max_queue", type=int, default=64, help="both modes (default: %(default)s)")
    p.add_argument("--cost_per_hour", type=float, default=1.624, help="USD/hour for the cost column "
                   "(default: %(default)s, the seeds' g5.4xlarge; this CPU machine has no list price)")
    p.add_argument("--out", default=str(ROOT / "results" / "serving"), help="results folder")
    p.add_argument("--plot", default=str(ROOT / "assets" / "serving_smollm2_samsum.png"))
    return p.parse_args(argv)


def wait_idle(url: str, limit_s: float = 180.0) -> None:
    """Until the server has nothing queued or running, so one rate's backlog never leaks into the next."""
    import httpx

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if httpx.get(url + "/health", timeout=10).json().get("in_flight", 0) == 0:
            return
        time.sleep(0.5)


def one_request_seconds(url: str, body: bytes, n: int = 2) -> float:
    """Median-free mean of n sequential requests after a warm-up one: the service time S1."""
    import httpx

    httpx.post(url + "/predict", content=body, timeout=600)
    start = time.perf_counter()
    for _ in range(n):
        r = httpx.post(url + "/predict", content=body, timeout=600)
        if r.status_code != 200:
            raise HubError(f"calibration request failed: {r.status_code} {r.text[:200]}")
    return (time.perf_counter() - start) / n


def model_capacity(url: str) -> dict:
    """From the server's own metrics: requests answered per second of model time, over every batch
    it ran (calibration included). Unlike a short run's throughput, this has no start-up or drain
    time in it: it is the rate the server could keep up with at the batch sizes that occurred."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    m = {s.name: s.value for fam in text_string_to_metric_families(httpx.get(url + "/metrics", timeout=10).text)
         for s in fam.samples if not s.labels}
    size, secs, batches = m["llmhub_batch_size_sum"], m["llmhub_batch_seconds_sum"], m["llmhub_batch_size_count"]
    return {"batches": int(batches), "mean_batch_size": size / batches, "model_seconds": secs,
            "capacity_rps": size / secs}


def search(grid: list[float], attack, fallback_steps: int = 2) -> list[dict]:
    """Rates of `grid` in ascending order until one fails; if the very first fails, step down by
    x0.75 (at most fallback_steps times) until one passes, so a slow machine still gets a figure."""
    rows = []
    for rate in grid:
        rows.append(attack(rate))
        if not rows[-1]["passed"]:
            break
    rate = grid[0]
    for _ in range(fallback_steps if not rows[0]["passed"] else 0):
        rate = round(rate * 0.75, 3)
        rows.insert(0, attack(rate))
        if rows[0]["passed"]:
            break
    return rows


def main() -> None:
    args = parse_args()

    def go():
        from inference.launch import ServerProcess
        from inference.load_testing import plots, sweep, targets
        from llmhub import models
        from llmhub.results import provenance, write_json

        if not (Path(args.data_dir) / "samsum" / "test.jsonl").is_file():
            raise HubError(f"{args.data_dir}/samsum/test.jsonl not found; pass --data_dir")
        out = Path(args.out)
        tok = models.load_tokenizer(models.resolve_path(args.model), "causal")
        raws = targets.pick_inputs(args.data_dir, "summarization", tok, 64, args.input_tokens)
        prompts = targets.render(tok, "causal", "summarization", raws)
        common = ["--model", args.model, "--task", "summarization", "--max_new_tokens", str(args.max_new_tokens),
                  "--max_queue", str(args.max_queue), "--threads", str(args.threads)]
        modes = {"naive": (common + ["--mode", "naive"], args.naive_grid),
                 "batched": (common + ["--mode", "batched", "--max_batch_size", str(args.max_batch_size),
                                       "--max_wait_ms", str(args.max_wait_ms)], args.batched_grid)}
        shown = {k: (os.path.relpath(v, ROOT) if k in ("out", "plot") else v) for k, v in vars(args).items()}
        # Paths relative to the repository: no machine's layout in the results.
        record = {"args": shown, "load_average_start": os.getloadavg(), "modes": {}}
        s1 = None
        rows = []
        for mode, (server_args, grid) in modes.items():
            label = f"fastapi-{mode}"
            with ServerProcess(server_args, log_path=out / "bench" / f"{label}.log") as srv:
                tfile = targets.write_targets(out / "bench" / f"{label}.targets.jsonl", "fastapi", srv.url,
                                              raws, prompts, tok, args.max_new_tokens)
                first = targets.read_targets(tfile)[0]["body"]
                if s1 is None:  # measured once, on the naive server: one request alone
                    s1 = one_request_seconds(srv.url, first)
                    print(f"S1 (one request alone, naive server) = {s1:.2f} s", flush=True)
                else:
                    one_request_seconds(srv.url, first, n=1)  # warm-up
                grid_rates = [round(float(c) / s1, 3) for c in grid.split(",")]
                sweep_rows = search(grid_rates, lambda rate: sweep.sweep(
                    tfile, [rate], max(args.duration, args.requests / rate), out / "bench" / label, "fastapi",
                    label, tok, args.cost_per_hour, timeout=2 * args.p90_bound, p90_bound=args.p90_bound,
                    between=lambda: wait_idle(srv.url))[0])
                rates = [r["offered_rps"] for r in sweep_rows]
                rows += sweep_rows
                best = plots.sustained(sweep_rows, label)
                record["modes"][mode] = {"rates": rates, "sustained": best, **model_capacity(srv.url)}
        record["s1_seconds"] = s1
        record["load_average_end"] = os.getloadavg()
        record["provenance"] = provenance(seed=0)
        record["torch_threads"] = args.threads
        record["rows"] = rows
        naive, batched = (record["modes"][m]["sustained"] for m in ("naive", "batched"))
        speedup = (batched["offered_rps"] / naive["offered_rps"]) if naive and batched else None
        record["speedup"] = speedup
        cn, cb = (record["modes"][m]["capacity_rps"] for m in ("naive", "batched"))
        record["capacity_ratio"] = cb / cn
        write_json(out / "bench_serving.json", record)
        plots.write_csv(rows, out / "bench_serving.csv")
        plots.plot(rows, args.plot, f"{args.model}, SAMSum ~{args.input_tokens}-token dialogues, "
                   f"{args.max_new_tokens} new tokens; {os.cpu_count()}-core CPU, {args.threads} torch thread(s)", args.p90_bound)
        print(f"\nsustained = highest offered rate with >= 99 % success and p90 <= {args.p90_bound:g} s")
        for mode in ("naive", "batched"):
            m = record["modes"][mode]
            b = m["sustained"]
            print(f"{mode:8s} " + (f"sustained {b['offered_rps']:.3f} rps, throughput {b['throughput_rps']:.3f} rps, "
                                   f"p90 {b['p90_s']:.2f} s, ${b['cost_per_1k_tokens']:.5f}/1K tokens at "
                                   f"${args.cost_per_hour}/h" if b else "sustained no rate of its grid")
                  + f"; model-time capacity {m['capacity_rps']:.3f} rps (mean batch {m['mean_batch_size']:.1f})")
        print(f"capacity ratio (batched/naive, requests per model-second) = {record['capacity_ratio']:.2f}")
        print(f"results: {out / 'bench_serving.json'}, plot: {args.plot}")
        print(f"speedup={speedup:.2f}" if speedup else "speedup=nan")

    run(go)


if __name__ == "__main__":
    main()
