"""Training throughput: seed-style padding (every example padded to the dataset's maximum length,
random order) vs ours (per-batch dynamic padding, length-grouped batches).

Same tiny Llama (built from a config, SmolLM2 tokenizer), same 512 SAMSum train dialogues, same
Trainer, one epoch each. The figure is real (non-pad) tokens per second, ours / seed-style.
Last line: speedup=<x>
"""
import argparse
import json
import tempfile
from pathlib import Path

import torch

from llmhub import models
from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_split
from llmhub.train import fit, real_tokens, tokenize_rows


def tiny_llama(vocab_size: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=128, intermediate_size=256,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        max_position_embeddings=2048))


def pad_to_max(features: list[dict], pad_id: int) -> list[dict]:
    """What the seeds did: every row padded to the longest row of the whole dataset."""
    longest = max(len(f["input_ids"]) for f in features)
    return [{"input_ids": f["input_ids"] + [pad_id] * (longest - len(f["input_ids"])),
             "attention_mask": f["attention_mask"] + [0] * (longest - len(f["input_ids"])),
             "labels": f["labels"] + [-100] * (longest - len(f["input_ids"]))} for f in features]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--output", default="results/benchmarks/training.json")
    args = ap.parse_args()

    path = models.resolve_path("smollm2-135m")
    tok = models.load_tokenizer(path, "causal")
    base = {"pretrained_ckpt": "smollm2-135m", "task": "summarization", "data_dir": args.data_dir,
            "method": "full", "epochs": 1, "batch_size": args.batch_size, "learning_rate": 1e-4,
            "max_source_length": 1024, "max_target_length": 128, "save_steps": 10_000, "logging_steps": 1000}
    cfg = apply_overrides(RunConfig(), base)
    rows = load_split(cfg.data, "train")[: args.examples]  # the first 512 dialogues of the split
    features = tokenize_rows(rows, tok, "causal", "causal", "generation", cfg.data)
    n_real = real_tokens(features)
    longest = max(len(f["input_ids"]) for f in features)
    report = {"examples": len(features), "real_tokens": n_real, "longest": longest,
              "padded_tokens_seed_style": longest * len(features)}
    for name, feats, grouped in (("seed_style", pad_to_max(features, tok.pad_token_id), False),
                                 ("ours", features, True)):
        run_cfg = apply_overrides(cfg, {"group_by_length": grouped})
        with tempfile.TemporaryDirectory() as tmp:
            stats = fit(tiny_llama(len(tok)), tok, feats, "causal", run_cfg, Path(tmp), resume=False)
        report[name] = {"seconds": stats["seconds"], "real_tokens_per_second": n_real / stats["seconds"]}
        print(f"{name}: {stats['seconds']:.1f} s, {n_real / stats['seconds']:.0f} real tokens/s", flush=True)
    speedup = report["ours"]["real_tokens_per_second"] / report["seed_style"]["real_tokens_per_second"]
    report.update(speedup=speedup, hardware=f"{torch.get_num_threads()} CPU threads, no GPU")
    from llmhub.results import write_json

    write_json(args.output, report)
    print(f"padding share seed-style: {1 - n_real / report['padded_tokens_seed_style']:.1%}")
    print(f"speedup={speedup:.2f}")


if __name__ == "__main__":
    main()
