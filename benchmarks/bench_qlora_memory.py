"""Peak resident memory of a LoRA training step: fp32 base vs QLoRA (4-bit nf4 base), same batch.

Each variant runs in a fresh Python process, so neither inherits the other's allocations, and reports
its peak RSS (ru_maxrss: weights + activations + optimizer state + the Python/torch runtime). The model
is loaded and wrapped through the engine (models.load_base_model, methods.wrap) exactly as a training
run does, then trains `--steps` optimizer steps on one fixed batch of random token ids (memory does not
depend on the text). Last line: `memory_ratio=<qlora peak / fp32 peak>`.

    python benchmarks/bench_qlora_memory.py            # SmolLM2-135M, batch 4 x 256 tokens, 2 steps
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory right now (VmRSS), unlike ru_maxrss which never goes down."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def weight_mb(model) -> float:
    """Bytes held by parameters and buffers (4-bit weights count at their packed size)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def child(args) -> None:
    """One variant in this (fresh) process; prints one JSON line."""
    import torch

    from llmhub import methods, models
    from llmhub.config import MethodConfig

    torch.manual_seed(0)
    rss_runtime = rss_mb()
    path = models.resolve_path(args.model)
    qlora = args.variant == "qlora"
    model = models.load_base_model(path, "causal", torch.float32, quantize_4bit=qlora)
    model = methods.wrap(model, MethodConfig(method="qlora" if qlora else "lora", lora_r=args.lora_r,
                                             lora_alpha=2 * args.lora_r, lora_dropout=0.0), "causal")
    if args.gradient_checkpointing:  # same in both variants: recompute activations in backward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    rss_loaded, rss_loaded_now, weights = rss_mb(), current_rss_mb(), weight_mb(model)
    trainable, total = methods.trainable_parameters(model)
    ids = torch.randint(10, model.config.vocab_size, (args.batch_size, args.seq_len),
                        generator=torch.Generator().manual_seed(0))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({"variant": args.variant, "peak_rss_mb": rss_mb(), "rss_after_load_mb": rss_loaded,
                      "rss_now_after_load_mb": rss_loaded_now, "weights_mb": weights,
                      "rss_runtime_mb": rss_runtime, "seconds_per_step": seconds, "loss": loss.item(),
                      "trainable_params": trainable, "total_params": total}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="registry name, hub id or folder (causal LM)")
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--lora_r", type=int, default=8)
    p.add_argument("--gradient_checkpointing", action="store_true",
                   help="recompute activations in backward (both variants)")
    p.add_argument("--output", default=str(ROOT / "results" / "benchmarks" / "qlora_memory.json"))
    p.add_argument("--data_dir", help="accepted for `make bench`; unused (the batch is random token ids)")
    p.add_argument("--variant", choices=["fp32", "qlora"], help=argparse.SUPPRESS)  # set in the child
    args = p.parse_args()
    if args.variant:
        child(args)
        return

    from llmhub.models import resolve_path
    from llmhub.results import hardware, provenance, write_json

    resolve_path(args.model)  # converts/caches the offline model once, outside the measured processes
    runs = {}
    for variant in ("fp32", "qlora"):
        cmd = [sys.executable, __file__, "--variant", variant, "--model", args.model, "--batch_size",
               str(args.batch_size), "--seq_len", str(args.seq_len), "--steps", str(args.steps),
               "--lora_r", str(args.lora_r)] + (["--gradient_checkpointing"] if args.gradient_checkpointing else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"error: the {variant} run failed: {proc.stderr.strip().splitlines()[-1]}")
        runs[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = runs[variant]
        print(f"{variant:6s} peak RSS {r['peak_rss_mb']:6.0f} MB | weights {r['weights_mb']:5.0f} MB | "
              f"RSS after load {r['rss_now_after_load_mb']:5.0f} MB (peak {r['rss_after_load_mb']:5.0f}) | "
              f"runtime {r['rss_runtime_mb']:4.0f} MB | {r['seconds_per_step']:.1f} s/step")
    ratio = runs["qlora"]["peak_rss_mb"] / runs["fp32"]["peak_rss_mb"]
    record = {"benchmark": "qlora_memory", "model": args.model, "batch_size": args.batch_size,
              "seq_len": args.seq_len, "steps": args.steps, "lora_r": args.lora_r,
              "gradient_checkpointing": args.gradient_checkpointing, "runs": runs,
              "weights_ratio": runs["qlora"]["weights_mb"] / runs["fp32"]["weights_mb"],
              "memory_ratio": ratio, "goal": "memory_ratio <= 0.5", "hardware": hardware(),
              "python": platform.python_version(), "provenance": provenance(0),
              "command": "python benchmarks/bench_qlora_memory.py " + " ".join(
                  f"--{k} {v}" for k, v in (("model", args.model), ("batch_size", args.batch_size),
                                            ("seq_len", args.seq_len), ("steps", args.steps)))
              + (" --gradient_checkpointing" if args.gradient_checkpointing else "")}
    write_json(args.output, record)
    print(f"weights_ratio={record['weights_ratio']:.3f} (parameters and buffers only)")
    print(f"written: {args.output}")
    print(f"memory_ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
