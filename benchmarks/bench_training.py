"""Training throughput: the original way vs ours, LoRA on the real SmolLM2-135M.

  original  as the seeds trained: every row padded to the longest row of the sample, random order,
            fp32 weights, the model's own loss (logits at every position), a plain transformers
            Trainer
  ours      train.fit as `python -m llmhub train` runs it: per-batch dynamic padding,
            length-grouped batches, the `auto` dtype (bf16 autocast with fp32 adapters on a CPU
            with native bf16), the loss at label positions only

Same first --examples SAMSum train dialogues, same LoRA (the llama2 recipe's: r 64 on q and v,
dropout 0.1), batches of 8 without accumulation, one epoch each, nothing else running. The figure is real (non-pad) tokens per second,
ours / original.
Last line: speedup=<x>
"""
import argparse
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
from llmhub.train import fit, real_tokens, tokenize_rows


def pad_to_max(features: list[dict], pad_id: int) -> list[dict]:
    """What the seeds did: every row padded to the longest row of the whole sample."""
    longest = max(len(f["input_ids"]) for f in features)
    return [{"input_ids": f["input_ids"] + [pad_id] * (longest - len(f["input_ids"])),
             "attention_mask": f["attention_mask"] + [0] * (longest - len(f["input_ids"])),
             "labels": f["labels"] + [-100] * (longest - len(f["input_ids"]))} for f in features]


def lora_model(cfg, dtype: torch.dtype):
    torch.manual_seed(0)
    base = models.load_base_model(models.resolve_path(cfg.model.pretrained_ckpt), "causal", dtype)
    return methods.wrap(base, cfg.method, "causal")


def original_seconds(cfg, features: list[dict], tok, out: Path) -> float:
    """One epoch the original way: a plain Trainer (the model's own full-logits loss), fp32."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    args = TrainingArguments(output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=cfg.train.batch_size,
                             learning_rate=cfg.train.learning_rate, seed=0, save_strategy="no", logging_steps=10_000,
                             report_to=[], use_cpu=True, remove_unused_columns=False)
    trainer = Trainer(model=lora_model(cfg, torch.float32), args=args, data_collator=default_data_collator,
                      train_dataset=Dataset.from_list(pad_to_max(features, tok.pad_token_id)))
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--output", default="results/benchmarks/training.json")
    args = ap.parse_args()

    over = {"pretrained_ckpt": "smollm2-135m", "method": "lora", "data_dir": args.data_dir, "batch_size": 8,
            "grad_accum": 1, "epochs": 1, "save_steps": 10_000, "logging_steps": 10_000}
    cfg = apply_overrides(apply_overrides(RunConfig(), defaults("llama2", "summarization")), over)
    tok = models.load_tokenizer(models.resolve_path("smollm2-135m"), "causal")
    features = tokenize_rows(load_split(cfg.data, "train")[: args.examples], tok, "causal", "causal", "generation",
                             cfg.data)
    n_real, longest = real_tokens(features), max(len(f["input_ids"]) for f in features)
    ours_dtype = models.resolve_dtype(cfg.model.torch_dtype)
    report = {"model": "smollm2-135m", "method": "lora", "examples": len(features), "real_tokens": n_real,
              "longest": longest, "padded_tokens_original": longest * len(features), "ours_dtype": str(ours_dtype),
              "hardware": hardware(), "load_average_before": os.getloadavg()}
    print(f"{len(features)} dialogues, {n_real} real tokens, longest row {longest}: "
          f"padding share the original way {1 - n_real / report['padded_tokens_original']:.1%}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {"original": original_seconds(cfg, features, tok, Path(tmp) / "original")}
        print(f"original: {seconds['original']:.1f} s, {n_real / seconds['original']:.0f} real tokens/s", flush=True)
        stats = fit(lora_model(cfg, ours_dtype), tok, features, "causal", apply_overrides(cfg, {"group_by_length": True}),
                    Path(tmp) / "ours", resume=False)
        seconds["ours"] = stats["seconds"]
        print(f"ours: {seconds['ours']:.1f} s, {n_real / seconds['ours']:.0f} real tokens/s", flush=True)
    for arm, s in seconds.items():
        report[arm] = {"seconds": s, "real_tokens_per_second": n_real / s}
    report.update(speedup=seconds["original"] / seconds["ours"], load_average_after=os.getloadavg())
    write_json(args.output, report)
    print(f"load average {report['load_average_before'][0]:.2f} -> {report['load_average_after'][0]:.2f}")
    print(f"speedup={report['speedup']:.2f}")


if __name__ == "__main__":
    main()
