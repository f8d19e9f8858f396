"""A sweep (or several) as a CSV and a PNG: p90 latency vs offered RPS and throughput vs offered
RPS, one line per label (server / mode). Rows come from the `rate_*.json` files a sweep writes, so a
plot can always be remade from the results on disk."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ...errors import HubError

COLUMNS = ["label", "server", "offered_rps", "achieved_rps", "requests", "success", "throughput_rps",
           "p50_s", "p90_s", "p99_s", "max_s", "mean_input_tokens", "mean_output_tokens", "tokens_per_s",
           "dollars_per_hour", "cost_per_1k_tokens", "passed",
           # streamed OpenAI requests only (llmhub/serve/loadtest/streaming.py)
           "ttft_p50_s", "ttft_p90_s", "itl_p50_s", "itl_p90_s", "output_tokens_per_s", "goodput_rps",
           "slo_ttft_s", "slo_itl_s"]


def read_rows(sweep_dirs: list[str | Path]) -> list[dict]:
    rows = []
    for d in sweep_dirs:
        files = sorted(Path(d).glob("rate_*.json"))
        if not files:
            raise HubError(f"{d} holds no rate_*.json sweep results")
        rows += [json.loads(f.read_text())["summary"] for f in files]
    return sorted(rows, key=lambda r: (r["label"], r["offered_rps"]))


def write_csv(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def plot(rows: list[dict], path: str | Path, title: str = "", p90_bound: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        x = [r["offered_rps"] for r in mine]
        ax1.plot(x, [r["p90_s"] for r in mine], marker="o", label=label)
        ax2.plot(x, [r["throughput_rps"] for r in mine], marker="o", label=label)
    if p90_bound is not None:
        ax1.axhline(p90_bound, color="grey", linestyle="--", linewidth=1, label=f"p90 bound {p90_bound:g} s")
    top = max(r["offered_rps"] for r in rows)
    ax2.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="throughput = offered")
    ax1.set(xlabel="offered requests per second", ylabel="p90 latency (s)", title="p90 latency vs RPS")
    ax2.set(xlabel="offered requests per second", ylabel="successful answers per second",
            title="throughput vs RPS")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sustained(rows: list[dict], label: str) -> dict | None:
    """The highest offered rate of a label whose run passed, and every lower rate passed too."""
    best = None
    for r in sorted((r for r in rows if r["label"] == label), key=lambda r: r["offered_rps"]):
        if not r.get("passed"):
            break
        best = r
    return best
