"""Model FLOPs utilisation (MFU) of a LoRA training step on a real model (default the offline
SmolLM2-135M; `--model gemma3-270m` or `--model qwen2.5-1.5b` for the others), fp32 and bf16.

1. Peak: this machine's matmul throughput at the model's own layer shapes, fp32 and bf16: one
   decoder layer's seven projections (SmolLM2: q, k, v, o: 576->576/192; gate, up: 576->1536; down:
   1536->576) on M = 2,048 rows (a batch of 8 x 256 tokens), best of 5, FLOP/s = FLOPs / seconds.
2. Steps: the demo's LoRA setup (r 64 on q/v, batch 8, SAMSum prompts <= 384 tokens, answers <= 64)
   on the same length-sorted batches, three arms, each 1 warm-up step then --steps timed steps:
     fp32_full_logits  the fp32 step as it was (model(**batch).loss: logits at every position)
     fp32              the engine's step in fp32 (Trainer.training_step, loss at label positions)
     bf16              the engine's step with --torch_dtype bfloat16 (bf16 base, fp32 adapters and
                       optimizer state, bf16 autocast without peft's fp32 input casts, loss at
                       label positions in fp32)
   Achieved FLOP/s counts the FLOPs the step needs, per real (non-pad) token:
     frozen projections   4 * N_lin   (forward 2 N_lin + activation gradient 2 N_lin; no weight grad)
     adapters             6 * N_lora  (forward, activation gradient and weight gradient, 2 each)
     attention            12 * L * d * c  (QK^T and AV: 4 L d c forward, 8 L d c backward, c = the
                          causal context, on average (S + 1) / 2 for a row of S tokens)
   plus, per label position, 4 * V * d for the output layer (forward + activation gradient).
   MFU = achieved FLOP/s / measured peak of the same dtype; mfu_bf16 uses the bf16 peak.
Last line: mfu_bf16=<fraction> speedup=<bf16 tokens/s / fp32_full_logits tokens/s> (each where its
arms ran: `--arms bf16` measures the MFU alone)
`--profile ARM` prints the torch.profiler table (self CPU time by op and shape) of one step instead;
ARM may also be bf16_weights_full_logits, the bf16 step as it was before autocast.
"""
import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

import torch

from llmhub import methods, models
from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_split
from llmhub.recipes import defaults
from llmhub.results import hardware, write_json
from llmhub.train import adapter_input_casting, collator, make_trainer, tokenize_rows

ARMS = {"fp32_full_logits": "float32", "fp32": "float32", "bf16": "bfloat16"}
# Profiled only: the bf16 step as it was (bf16 weights, logits at every position, no autocast).
PROFILE_ARMS = {**ARMS, "bf16_weights_full_logits": "bfloat16"}


def seconds_of(fn, repeats: int = 5) -> float:
    fn()  # warm-up: oneDNN builds its kernels on first use
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def layer_shapes(config) -> list[tuple[int, int]]:
    """(in, out) of one decoder layer's seven projections: q, k, v, o, gate, up, down."""
    d, ff = config.hidden_size, config.intermediate_size
    head = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    return [(d, q), (d, kv), (d, kv), (q, d), (d, ff), (d, ff), (ff, d)]


def matmul_peak(dtype: torch.dtype, shapes: list[tuple[int, int]], rows: int = 2048) -> float:
    """FLOP/s of one decoder layer's seven projections at `rows` tokens."""
    x = {k: torch.randn(rows, k, dtype=dtype) for k in {k for k, _ in shapes}}
    w = [torch.randn(n, k, dtype=dtype) for k, n in shapes]
    flops = sum(2 * rows * k * n for k, n in shapes)
    return flops / seconds_of(lambda: [torch.nn.functional.linear(x[wi.shape[1]], wi) for wi in w])


def step_flops(model, batch) -> float:
    """The FLOPs a training step needs for `batch` (formula in the module docstring)."""
    cfg = model.config
    base = model.get_base_model().model
    n_lin = sum(p.numel() for n, p in base.layers.named_parameters() if n.endswith(".weight") and "lora_" not in n
                and p.dim() == 2)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lengths = batch["attention_mask"].sum(1).double()
    tokens = lengths.sum().item()
    context = (lengths * (lengths + 1) / 2).sum().item()  # sum over tokens of their causal context
    labels = (batch["labels"][:, 1:] != -100).sum().item()
    return (tokens * (4 * n_lin + 6 * n_lora) + 12 * cfg.num_hidden_layers * cfg.hidden_size * context
            + labels * 4 * cfg.vocab_size * cfg.hidden_size)


def run_arm(arm: str, path: str, tok, cfg, features, batches, steps: int, profile: bool = False) -> dict:
    arm_cfg = apply_overrides(cfg, {"torch_dtype": PROFILE_ARMS[arm]})
    torch.manual_seed(0)
    model = models.load_base_model(path, "causal", models.resolve_dtype(PROFILE_ARMS[arm]))
    model = methods.wrap(model, arm_cfg.method, "causal")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(model, tok, features, "causal", arm_cfg, Path(tmp))
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); one micro-batch per step here
    model.train()

    def step(batch):
        if arm.endswith("full_logits"):
            model(**batch).loss.backward()
        else:
            trainer.training_step(model, dict(batch))
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()

    casting = adapter_input_casting(trainer) if not arm.endswith("full_logits") else contextlib.nullcontext()
    with casting:  # as train.fit runs the Trainer
        return _timed(model, step, batches, steps, profile)


def _timed(model, step, batches, steps: int, profile: bool) -> dict:
    step(batches[0])
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
            step(batches[1])
        print(p.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=16,
                                                              max_name_column_width=45, max_shapes_column_width=48))
        return {}
    timed = batches[1:1 + steps]
    start = time.perf_counter()
    for b in timed:
        step(b)
    seconds = time.perf_counter() - start
    tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    flops = sum(step_flops(model, b) for b in timed)
    return {"seconds": seconds, "steps": len(timed), "real_tokens": tokens,
            "tokens_per_second": tokens / seconds, "flops_per_second": flops / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per arm (after one warm-up step)")
    ap.add_argument("--profile", choices=list(PROFILE_ARMS), help="print the profile of one step of this arm and stop")
    ap.add_argument("--model", default="smollm2-135m", help="a registry name or folder of a causal model")
    ap.add_argument("--arms", default=",".join(ARMS),
                    help="comma-separated arms to run (the 1.5B's fp32 full-logits arm needs ~16 GB)")
    ap.add_argument("--output", help="results file (default results/benchmarks/mfu.json, or mfu.<model>.json)")
    args = ap.parse_args()
    output = args.output or ("results/benchmarks/mfu.json" if args.model == "smollm2-135m"
                             else f"results/benchmarks/mfu.{Path(args.model).name}.json")

    over = {"pretrained_ckpt": args.model, "method": "lora", "data_dir": args.data_dir, "batch_size": 8,
            "max_source_length": 384, "max_target_length": 64}
    cfg = apply_overrides(apply_overrides(RunConfig(), defaults("llama2", "summarization")), over)
    path = models.resolve_path(args.model)
    tok = models.load_tokenizer(path, "causal")
    n = 8 * (args.steps + 2)
    features = tokenize_rows(load_split(cfg.data, "train")[:n], tok, "causal", "causal", "generation", cfg.data)
    ordered = sorted(features, key=lambda f: len(f["input_ids"]))  # as length-grouped sampling does
    batches = [collator(tok, "causal")(ordered[i:i + 8]) for i in range(0, n, 8)]
    if args.profile:
        run_arm(args.profile, path, tok, cfg, features, batches, 1, profile=True)
        return
    shapes = layer_shapes(models.load_config(path))
    report = {"model": args.model, "hardware": hardware(), "layer_shapes": shapes, "load_average_before": os.getloadavg(), "threads": torch.get_num_threads(),
              "cpu_native_bf16": models.cpu_supports_bf16(), "auto_dtype": str(models.resolve_dtype("auto")),
              "bf16_matmul_speedup": models.bf16_matmul_speedup()}  # the probe `auto` reads without AMX
    report["peak_flops"] = {"fp32": matmul_peak(torch.float32, shapes), "bf16": matmul_peak(torch.bfloat16, shapes)}
    print(f"native bf16: {report['cpu_native_bf16']}; --torch_dtype auto: {report['auto_dtype']} (bf16 matmul "
          f"probe {report['bf16_matmul_speedup']:.2f}x fp32); matmul peak at the layer shapes: "
          f"fp32 {report['peak_flops']['fp32'] / 1e9:.0f} GFLOP/s, bf16 {report['peak_flops']['bf16'] / 1e9:.0f}",
          flush=True)
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        ap.error(f"--arms: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(ARMS)}")
    for arm in arms:
        r = run_arm(arm, path, tok, cfg, features, batches, args.steps)
        r["mfu"] = r["flops_per_second"] / report["peak_flops"]["bf16" if arm == "bf16" else "fp32"]
        r["mfu_of_bf16_peak"] = r["flops_per_second"] / report["peak_flops"]["bf16"]
        report[arm] = r
        print(f"{arm}: {r['tokens_per_second']:.0f} real tokens/s, {r['flops_per_second'] / 1e9:.1f} GFLOP/s, "
              f"MFU {r['mfu']:.1%} of its dtype's peak", flush=True)
    report["load_average_after"] = os.getloadavg()
    base = report.get("fp32_full_logits", {}).get("tokens_per_second")
    if base and "fp32" in report:
        report["speedup_fp32_label_positions"] = report["fp32"]["tokens_per_second"] / base
        print(f"fp32 with label-position loss: {report['speedup_fp32_label_positions']:.2f}x the full-logits step")
    print(f"load average {report['load_average_before'][0]:.2f} -> {report['load_average_after'][0]:.2f}")
    last = []
    if "bf16" in report:
        report["mfu_bf16"] = report["bf16"]["mfu"]
        last.append(f"mfu_bf16={report['mfu_bf16']:.3f}")
        if base:
            report["speedup"] = report["bf16"]["tokens_per_second"] / base
            last.append(f"speedup={report['speedup']:.2f}")
    write_json(output, report)
    print(" ".join(last) or "no bf16 arm: no figure")


if __name__ == "__main__":
    main()
