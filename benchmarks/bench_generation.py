"""Evaluation decoding: one example at a time (as the seeds did) vs our batched generation.

Real SmolLM2-135M, greedy, up to 60 new tokens, the first 200 SAMSum test dialogues with the
zero-shot summarization prompt. Both arms run llmhub.generate.generate; only the batch size differs.
Predictions are compared one by one: left padding with a correct attention mask should make them
identical; any that differ are listed with where they diverge.
Last line: speedup=<x>
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from llmhub import models, prompts  # noqa: E402
from llmhub.config import RunConfig, apply_overrides  # noqa: E402
from llmhub.data import load_split  # noqa: E402
from llmhub.generate import generate  # noqa: E402
from llmhub.results import write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--max_new_tokens", type=int, default=60)
    ap.add_argument("--output", default="results/benchmarks/generation.json")
    args = ap.parse_args()

    cfg = apply_overrides(RunConfig(), {"task": "summarization", "data_dir": args.data_dir})
    rows = load_split(cfg.data, "test")[: args.examples]
    path = models.resolve_path("smollm2-135m")
    tok = models.load_tokenizer(path, "causal")
    model = models.load_base_model(path, "causal", torch.float32)
    texts = [prompts.render("causal", "generation", r["input"], "zero-shot") for r in rows]
    report = {"examples": len(rows), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    outputs = {}
    for name, bs in (("one_by_one", 1), ("batched", args.batch_size)):
        start = time.perf_counter()
        outputs[name] = generate(model, tok, texts, "causal", args.max_new_tokens, batch_size=bs,
                                 max_source_length=2048)
        seconds = time.perf_counter() - start
        report[name] = {"seconds": seconds, "seconds_per_example": seconds / len(rows)}
        print(f"{name}: {seconds:.1f} s ({seconds / len(rows):.2f} s/example)", flush=True)
    differ = [(r["id"], a, b) for r, a, b in zip(rows, outputs["one_by_one"], outputs["batched"]) if a != b]
    for rid, a, b in differ:
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        print(f"differs {rid} at char {at}: one-by-one {a[at:at + 40]!r} vs batched {b[at:at + 40]!r}")
    report["identical_predictions"] = len(rows) - len(differ)
    report["differing_ids"] = [d[0] for d in differ]
    report["speedup"] = report["one_by_one"]["seconds"] / report["batched"]["seconds"]
    report["hardware"] = f"{torch.get_num_threads()} CPU threads, no GPU"
    write_json(args.output, report)
    print(f"identical predictions: {len(rows) - len(differ)}/{len(rows)}")
    print(f"speedup={report['speedup']:.2f}")


if __name__ == "__main__":
    main()
