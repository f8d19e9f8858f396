"""The load-testing harness against a real tiny server on 127.0.0.1: targets in Vegeta's format,
the built-in attacker's achieved rate and counts, a CLI sweep with CSV, plot and cost, and one-line
errors for bad input."""
from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llmhub.serve.process import ServerProcess, free_port
from llmhub.serve.loadtest import attacker, streaming, targets
from llmhub import models
from test_server import trained_experiment

ROOT = Path(__file__).resolve().parents[2]
RUN = [sys.executable, str(ROOT / "inference" / "load_testing" / "run.py")]


def cli(*args, code: int = 0) -> subprocess.CompletedProcess:
    """run.py with these arguments; fails the test unless it exits with `code`."""
    r = subprocess.run(RUN + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert r.returncode == code, r.stderr
    return r


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models, data_dir):
    exp = trained_experiment(tmp_path_factory.mktemp("lt"), tiny_models["llama"], data_dir)
    with ServerProcess(["--experiment_dir", str(exp), "--mode", "batched", "--max_wait_ms", "20"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
    return models.load_tokenizer(str(tokenizer_dir), "causal")


def test_targets_per_server_type(tmp_path, data_dir, tok):
    raws = targets.pick_inputs(data_dir, "summarization", tok, 5, target_tokens=20)
    # each is a whole test dialogue of 16-24 tokens (20 +- 20 %) or, once those run out, the first
    # 20 tokens of a longer one
    dialogues = [json.loads(x)["dialogue"] for x in (data_dir / "samsum" / "test.jsonl").read_text().splitlines()]
    size = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    whole = [d for d in dialogues if 16 <= size(d) <= 24]
    cut = [r for r in raws if r not in dialogues]
    assert len(raws) == 5 and raws[: len(raws) - len(cut)] == whole[:5]
    assert all(size(r) == 20 and any(d.startswith(r) and size(d) > 24 for d in dialogues) for r in cut), cut
    prompts = targets.render(tok, "causal", "summarization", raws)
    bodies = {}
    for server in targets.SERVERS:
        path = targets.write_targets(tmp_path / f"{server}.jsonl", server, "http://127.0.0.1:1", raws, prompts, tok, 7)
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert len(lines) == 5 and lines[0]["method"] == "POST"
        assert lines[0]["header"] == {"Content-Type": ["application/json"]}
        assert lines[0]["url"] == "http://127.0.0.1:1" + targets.SERVERS[server]
        bodies[server] = json.loads(base64.b64decode(lines[0]["body"]))
        assert targets.read_meta(path)[0]["input_tokens"] == len(tok(prompts[0])["input_ids"])
    assert bodies["fastapi"] == bodies["ray"] == {"prompt": raws[0], "max_new_tokens": 7}
    assert bodies["tgi"] == {"inputs": prompts[0], "parameters": {"max_new_tokens": 7}}
    assert prompts[0].startswith("### Dialogue: ") and prompts[0].endswith("### Summary: ")
    assert bodies["vllm"]["prompt"] == prompts[0] and bodies["vllm"]["max_tokens"] == 7
    assert bodies["vllm"]["temperature"] == 0


def test_attacker_rate_and_counts(server, tmp_path, data_dir, tok):
    raws = targets.pick_inputs(data_dir, "summarization", tok, 4, target_tokens=20)
    path = targets.write_targets(tmp_path / "t.jsonl", "fastapi", server.url, raws,
                                 targets.render(tok, "causal", "summarization", raws), tok, 4)
    results = attacker.run_attack(targets.read_targets(path), rate=10, duration=2)
    rep = attacker.report(results)
    assert rep["requests"] == 20 and [r["seq"] for r in results] == list(range(20))
    assert rep["status_codes"] == {"200": 20} and rep["success"] == 1.0 and rep["errors"] == []
    # Open loop: request i is sent at its slot i/10 s after the first, never earlier (how much later
    # depends on the machine's load, so it is not asserted); hence the offered rate is at most 20/1.9 s.
    starts = [r["_start"] for r in results]
    assert all(s - starts[0] >= i / 10 - 0.005 for i, s in enumerate(starts)), starts
    assert 0 < rep["throughput"] <= rep["rate"] <= 20 / 1.9 * 1.003
    lat = rep["latencies"]
    assert 0 < lat["min"] <= lat["50th"] <= lat["90th"] <= lat["95th"] <= lat["99th"] <= lat["max"]
    assert lat["mean"] * 20 == pytest.approx(lat["total"], abs=20)
    assert {"earliest", "latest", "end", "duration", "wait", "bytes_in", "bytes_out"} <= set(rep)
    # targets are used round-robin, as Vegeta does
    assert all(json.loads(base64.b64decode(r["body"]))["prediction"] is not None for r in results)


def test_sweep_cli_csv_plot_and_cost(server, tmp_path, data_dir, tokenizer_dir):
    tfile = tmp_path / "fastapi.jsonl"
    cli("targets", "--server", "fastapi", "--url", server.url, "--data_dir", data_dir, "--tokenizer", tokenizer_dir,
        "--n", "4", "--input_tokens", "20", "--max_new_tokens", "4", "--out", tfile)
    out = tmp_path / "sweep"
    r = cli("attack", "--server", "fastapi", "--targets", tfile, "--rates", "8,4", "--duration", "1.5",
            "--label", "tiny-batched", "--out", out, "--tokenizer", tokenizer_dir, "--cost_per_hour", "1.624",
            "--p90_bound", "600")  # above the client's 30 s timeout: passing depends on answers, not speed
    assert "using the built-in open-loop attacker" in r.stderr  # no vegeta on this machine
    assert "sustained: 8 rps" in r.stdout
    assert sorted(p.name for p in out.glob("rate_*.json")) == ["rate_4.json", "rate_8.json"]
    rep = json.loads((out / "rate_8.json").read_text())
    assert rep["report"]["requests"] == 12 and rep["summary"]["passed"]
    csv_path, png = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    cli("summarize", out, "--csv", csv_path, "--plot", png)
    assert png.stat().st_size > 10_000
    rows = list(csv.DictReader(csv_path.open()))
    assert [float(x["offered_rps"]) for x in rows] == [4.0, 8.0]
    for row in rows:  # cost from the achieved throughput and the real token counts
        tokens = float(row["mean_input_tokens"]) + float(row["mean_output_tokens"])
        expected = 1.624 / (float(row["throughput_rps"]) * 3600 * tokens) * 1000
        assert float(row["cost_per_1k_tokens"]) == pytest.approx(expected, rel=5e-3)  # means rounded to 0.1
        assert float(row["mean_output_tokens"]) > 0


def test_streamed_openai_sweep_reports_ttft_itl_and_goodput(server, tmp_path, data_dir, tokenizer_dir):
    tfile = tmp_path / "openai.jsonl"
    name = httpx.get(server.url + "/v1/models").json()["data"][0]["id"]
    cli("targets", "--server", "openai", "--url", server.url, "--data_dir", data_dir, "--tokenizer", tokenizer_dir,
        "--n", "4", "--input_tokens", "20", "--max_new_tokens", "6", "--model_name", name, "--out", tfile)
    assert json.loads(base64.b64decode(json.loads(tfile.read_text().splitlines()[0])["body"]))["stream"] is True
    out = tmp_path / "sweep"
    cli("attack", "--server", "openai", "--targets", tfile, "--rates", "4", "--duration", "1.5",
        "--label", "tiny-stream", "--out", out, "--tokenizer", tokenizer_dir, "--slo_ttft", "60", "--slo_itl", "60")
    row = json.loads((out / "rate_4.json").read_text())["summary"]
    assert row["success"] == 1.0 and row["mean_output_tokens"] > 0
    assert 0 < row["ttft_p50_s"] <= row["ttft_p90_s"] <= row["p90_s"]
    assert row["itl_p50_s"] > 0 and row["output_tokens_per_s"] > 0
    assert row["goodput_rps"] == pytest.approx(row["throughput_rps"], rel=1e-3)  # every request met a 60 s SLO
    results = [json.loads(line) for line in (out / "rate_4.results.jsonl").read_text().splitlines()]
    assert all(x["ttft_ns"] > 0 and x["output_tokens"] >= 1 for x in results)
    seconds = (json.loads((out / "rate_4.json").read_text())["report"]["duration"] +
               json.loads((out / "rate_4.json").read_text())["report"]["wait"]) / attacker.NS
    assert streaming.stats(results, seconds, slo_ttft=1e-9, slo_itl=60)["goodput_rps"] == 0  # nobody is that fast
    cli("summarize", out, "--csv", tmp_path / "s.csv")
    assert "goodput_rps" in (tmp_path / "s.csv").read_text().splitlines()[0]


@pytest.mark.parametrize("args, message", [
    (["--server", "triton"], "unknown server type 'triton'; allowed: fastapi, ray, tgi, vllm, openai"),
    (["--slo_ttft", "0"], "--slo_ttft and --slo_itl must be > 0 seconds"),
    (["--min_kept_up", "1.5"], "--min_kept_up must be between 0 and 1 (a share of the offered rate), got 1.5"),
    (["--rates", "0"], "rates must be > 0 requests per second, got 0"),
    (["--rates", "2,-1"], "rates must be > 0 requests per second, got -1"),
    ([], "cannot reach http://127.0.0.1:{port}"),
])
def test_bad_input_is_one_line(tmp_path, tok, args, message):
    port = free_port()  # nothing listens there
    tfile = targets.write_targets(tmp_path / "t.jsonl", "fastapi", f"http://127.0.0.1:{port}", ["hi"], ["hi"], tok, 4)
    base = {"--server": "fastapi", "--rates": "1"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    r = cli("attack", "--targets", tfile, "--duration", "1", "--label", "x", "--out", tmp_path / "o",
            *[x for kv in base.items() for x in kv], code=2)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: " + message.format(port=port)), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("capacity, start, rates, best", [
    (2.0, 1.0, [1.0, 1.5, 1.837, 2.033, 2.25], 1.837),  # up x1.5 until 2.25 fails, then bisect (max_runs ends it)
    (0.5, 1.0, [0.36, 0.465, 0.528, 0.6, 1.0], 0.465),  # down x0.6 until 0.36 passes, then bisect 0.36..0.6
    (99.0, 1.0, [1.0, 1.5, 2.25, 3.375, 5.062], 5.062),  # never fails: stops after max_runs, a lower bound
    (0.01, 1.0, [0.13, 0.216, 0.36, 0.6, 1.0], None),  # nothing passes within 5 runs
])
def test_rate_search_brackets_the_sustained_rate(capacity, start, rates, best):
    from llmhub.serve.loadtest import charts
    from llmhub.serve.loadtest import rates as rate_sweep  # `rates` is the parameter

    def attack(rate):  # a server that keeps its p90 bound up to `capacity` requests per second
        return {"label": "x", "offered_rps": rate, "passed": rate <= capacity}

    rows = rate_sweep.find_sustained(attack, start, step=1.5, max_runs=5, down=0.6)
    assert [r["offered_rps"] for r in rows] == rates
    assert (charts.sustained(rows, "x") or {}).get("offered_rps") == best


def test_rate_search_stops_within_precision():
    from llmhub.serve.loadtest import rates

    rows = rates.find_sustained(lambda rate: {"offered_rps": rate, "passed": rate <= 2.0}, 1.0, max_runs=9,
                                precision=1.1)
    assert [r["offered_rps"] for r in rows] == [1.0, 1.5, 1.837, 1.933, 2.033, 2.25]


@pytest.mark.parametrize("service_s, kept", [(0.5, 1.0), (2.0, 0.5)])
def test_kept_up_is_the_share_of_the_offered_rate_answered(service_s, kept):
    """One request per second for 60 s to a one-at-a-time server taking service_s per request: it keeps
    up at 0.5 s; at 2 s its backlog grows and it answers half the offered rate."""
    from datetime import datetime, timezone

    from llmhub.serve.loadtest import rates

    results, free = [], 0.0
    for i in range(61):
        end = free = max(free, i) + service_s
        results.append({"code": 200 if i % 10 else 500, "latency": int((end - i) * 1e9),
                        "timestamp": datetime.fromtimestamp(1_700_000_000 + i, timezone.utc).isoformat()})
    # failed requests are not answers: 1 in 10 here
    assert rates.kept_up(results) == pytest.approx(0.9 * kept, abs=0.06)


def bench_serving():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "benchmarks" / "bench_serving.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_saturated_ratio_is_of_medians_with_the_spread_over_the_repeats():
    bench = bench_serving()
    servers = {"vllm": {"saturated_rps": [4.0, 4.2, 3.8]}, "ours-vllm": {"saturated_rps": [3.9, 3.9, 3.9]},
               "naive": {"saturated_rps": [0.5, 0.5]}, "batched": {"saturated_rps": [3.0, 3.0]},
               "continuous": {"saturated_rps": [2.0, 2.5]}, "transformers-serve": {"available": False}}
    value, spread = bench.saturated_ratio(servers, ("ours-vllm",), "vllm")
    assert value == pytest.approx(3.9 / 4.0) and spread == pytest.approx((3.9 / 3.8 - 3.9 / 4.2) / 2 / value)
    assert bench.saturated_ratio(servers, bench.OURS[1:], "naive")[0] == pytest.approx(3.9 / 0.5)  # the best
    assert bench.saturated_ratio(servers, bench.LOCAL, "transformers-serve") is None
    assert bench.spread([3.8, 4.0, 4.2]) == pytest.approx(0.05)


def test_paired_ratio_is_per_round_so_a_drift_falls_on_both_sides(monkeypatch):
    bench = bench_serving()
    # the machine slows by 10 % a round; the front always takes 5 % of vLLM's throughput
    sent, drained = [], []

    def at_once(loaded, n, what):
        sent.append(loaded[0]["name"])
        speed = 4.0 * 0.9 ** ((len(sent) - 1) // 2)
        return [], {"throughput": speed * (0.95 if loaded[0]["name"] == "front" else 1.0)}

    monkeypatch.setattr(bench, "at_once", at_once)
    runs = bench.paired({"vllm": [{"name": "vllm"}], "ours-vllm": [{"name": "front"}]}, 48, 4,
                        lambda: drained.append(1))
    assert sent == ["vllm", "front", "front", "vllm"] * 2 and len(drained) == 8  # order swapped every round
    value, spread = bench.paired_ratio(runs, "ours-vllm", "vllm")
    assert value == pytest.approx(0.95, abs=1e-3) and spread < 1e-3
    assert runs["vllm"][0] / runs["vllm"][-1] > 1.3  # while each side alone moved by a third
