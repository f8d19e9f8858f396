"""Resident memory and speed of training steps with llmhub's kernel-cache bounds vs the libraries' own.

oneDNN and PyTorch's ideep layer keep every matmul kernel they build, keyed by shape, up to 1,024
each; a run meets a new sequence length at nearly every batch, so its memory grew with each one.
Importing llmhub bounds both caches to 64 (llmhub/__init__.py). Two arms, each in a fresh process on
the same batches: `bounded` (llmhub's default) and `library` (ONEDNN_PRIMITIVE_CACHE_CAPACITY and
LRU_CACHE_CAPACITY = 1024, as torch ships). Each runs the engine's bf16 LoRA training step
(Trainer.training_step + AdamW, the study's recipe: LoRA on the family's default targets, batch 8)
on --steps SAMSum batches of shuffled training dialogues (a new length nearly every batch), and
records resident memory after each step (after gc and malloc_trim), its peak (VmHWM) and real
tokens/s. --repeats N runs the arms N times each, alternating (A B B A ...).
Last line: peak_ratio=<bounded peak / library peak> growth_mb_per_length=<bounded>/<library>
speed_ratio=<bounded tokens/s / library tokens/s>

  python benchmarks/bench_kernel_cache.py --data_dir ../shared/data
  python benchmarks/bench_kernel_cache.py --data_dir ../shared/data --model gemma3-270m --steps 12
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {"bounded": {}, "library": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "1024"}}
CACHE_VARS = tuple(ARMS["library"])


def arm(args) -> dict:
    """One arm, in this (fresh) process: the steps and their memory and speed."""
    import random
    import tempfile
    import time

    import torch

    from llmhub import methods, models
    from llmhub.config import RunConfig, apply_overrides
    from llmhub.data import load_split
    from llmhub.recipes import defaults
    from llmhub.results import peak_memory_mb, release_heap
    from llmhub.train import adapter_input_casting, collator, make_trainer, tokenize_rows

    def rss_mb() -> float:
        release_heap()
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    cfg = apply_overrides(apply_overrides(RunConfig(), defaults("llama2", "summarization")), {
        "pretrained_ckpt": args.model, "method": "lora", "data_dir": args.data_dir, "batch_size": 8,
        "torch_dtype": "bfloat16"})
    path = models.resolve_path(args.model)
    tok = models.load_tokenizer(path, "causal")
    rows = load_split(cfg.data, "train")[:8 * (args.steps + 1)]
    random.Random(0).shuffle(rows)
    features = tokenize_rows(rows, tok, "causal", "causal", "generation", cfg.data)
    batches = [collator(tok, "causal")(features[i:i + 8]) for i in range(0, len(features), 8)]
    torch.manual_seed(0)
    model = methods.wrap(models.load_base_model(path, "causal", torch.bfloat16), cfg.method, "causal")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(model, tok, features, "causal", cfg, Path(tmp))
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    model.train()

    def step(batch):
        trainer.training_step(model, dict(batch))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    with adapter_input_casting(trainer):
        step(batches[0])  # one-off allocations (optimizer state, first kernels)
        start, rss, seconds, tokens = rss_mb(), [], 0.0, 0
        for b in batches[1:]:
            t = time.perf_counter()
            step(b)
            seconds += time.perf_counter() - t
            tokens += int(b["attention_mask"].sum())
            rss.append(round(rss_mb(), 1))
    lengths = len({b["input_ids"].shape[1] for b in batches[1:]})
    return {"cache_capacity": {v: os.environ.get(v) for v in CACHE_VARS}, "steps": len(batches) - 1,
            "new_lengths": lengths, "rss_start_mb": round(start, 1), "rss_mb": rss,
            "growth_mb_per_length": (rss[-1] - start) / lengths, "peak_mb": peak_memory_mb(),
            "tokens_per_second": tokens / seconds, "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="data", help="folder holding samsum/ (default: %(default)s)")
    p.add_argument("--model", default="smollm2-135m", help="a causal registry name or folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=24, help="measured steps per arm (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each arm, alternating (default: %(default)s)")
    p.add_argument("--output", help="results file (default results/benchmarks/kernel_cache[.<model>].json)")
    p.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)  # internal: run one arm, print JSON
    args = p.parse_args()
    if args.arm:
        print(json.dumps(arm(args)))
        return
    if not (Path(args.data_dir) / "samsum").is_dir():
        raise SystemExit(f"error: {args.data_dir}/samsum not found; pass --data_dir")
    if args.steps < 2 or args.repeats < 1:
        raise SystemExit(f"error: need --steps >= 2 and --repeats >= 1, got {args.steps} and {args.repeats}")
    from llmhub.results import hardware, write_json

    output = Path(args.output or ROOT / "results" / "benchmarks" / (
        "kernel_cache.json" if args.model == "smollm2-135m" else f"kernel_cache.{Path(args.model).name}.json"))
    order = [name for i in range(args.repeats) for name in (("bounded", "library") if i % 2 == 0 else ("library", "bounded"))]
    record = {"model": args.model, "steps": args.steps, "order": order, "hardware": hardware(),
              "load_average_before": os.getloadavg(), "runs": []}
    base_env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    for name in order:
        cmd = [sys.executable, __file__, "--arm", name, "--data_dir", args.data_dir, "--model", args.model,
               "--steps", str(args.steps)]
        out = subprocess.run(cmd, cwd=ROOT, env=base_env | ARMS[name], capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"error: arm {name} failed: {out.stderr.strip().splitlines()[-1:]}")
        r = {"arm": name, **json.loads(out.stdout.strip().splitlines()[-1])}
        record["runs"].append(r)
        print(f"{name:8s} caches {r['cache_capacity']}: {r['new_lengths']} new lengths, resident "
              f"{r['rss_start_mb']:.0f} -> {r['rss_mb'][-1]:.0f} MB ({r['growth_mb_per_length']:.1f} MB per length), "
              f"peak {r['peak_mb']:.0f} MB, {r['tokens_per_second']:.0f} real tokens/s", flush=True)
    record["load_average_after"] = os.getloadavg()
    med = {name: {k: statistics.median(r[k] for r in record["runs"] if r["arm"] == name)
                  for k in ("peak_mb", "growth_mb_per_length", "tokens_per_second")} for name in ARMS}
    record["median"] = med
    b, lib = med["bounded"], med["library"]
    record["peak_ratio"] = b["peak_mb"] / lib["peak_mb"]
    record["speed_ratio"] = b["tokens_per_second"] / lib["tokens_per_second"]
    speeds = [r["tokens_per_second"] for r in record["runs"]]
    print(f"load average {record['load_average_before'][0]:.2f} -> {record['load_average_after'][0]:.2f}; "
          f"tokens/s of every run: {', '.join(f'{s:.0f}' for s in speeds)}; results: {output}")
    write_json(output, record)
    print(f"peak_ratio={record['peak_ratio']:.3f} growth_mb_per_length={b['growth_mb_per_length']:.1f}/"
          f"{lib['growth_mb_per_length']:.1f} speed_ratio={record['speed_ratio']:.3f}")


if __name__ == "__main__":
    main()
