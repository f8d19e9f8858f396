"""Evaluation decoding: one example at a time in fp32 (as the seeds did) vs our batched generation,
and how far batched decoding is from this machine's memory-bandwidth bound, measured in one run.

Real SmolLM2-135M, greedy, up to 60 new tokens, SAMSum test dialogues with the zero-shot
summarization prompt, through llmhub.generate.generate. Arms:
  one_by_one   fp32, batch 1, on the first --one_by_one_examples dialogues (a sub-sample, so the
               benchmark holds the machine for minutes, not a quarter of an hour; per-example time)
  batched      --torch_dtype auto (bf16 where the CPU has native bf16, else fp32), --batch_size, on
               --examples dialogues; --cache static adds a static KV cache (`cache_implementation`)
Predictions of the two arms are compared on the shared sub-sample when both are fp32: left padding
with a correct attention mask should make them identical; any that differ are listed.
Bandwidth bound: a decode step reads every weight once, so at batch B generated tokens/s <=
B * read bandwidth / weight bytes; the read bandwidth is measured here (sum over a 512 MiB tensor).
Generated tokens are counted by re-tokenising each prediction (+1 for its end token).
Where the time goes: forward hooks time every call of the model in the batched arm; a call on more
than one new token per row is a prefill, one token per row a decode step. A decode step's bound is
weight bytes / bandwidth (+ the KV cache it reads, reported beside); the prefill is compute-bound
(2 x non-embedding parameters FLOPs per padded prompt token, attention left out).
  vllm         vLLM's offline engine (llmhub/vllm_eval.py, --eval_engine vllm) on the same --examples
               prompts, tokenised the same way, in the batched arm's dtype; runs when vLLM's
               virtualenv exists (make -C inference/vllm venv) unless --no_vllm. Its examples/s
               count generation only, and again with the child's start-up (imports, loading).
               Across engines (and dtypes) predictions are not identical: ROUGE against the
               references is reported for both batched arms instead.
Last line: speedup=<batched / one_by_one ex/s> vllm_speedup=<vllm / one_by_one>
           vllm_speedup_with_startup=<same, start-up counted> speedup_vs_seed=<the best of the engines>
           fraction_of_bound=<f> decode_fraction_of_bound=<f>
"""
import argparse
import os
import time

import torch

from llmhub import metrics, models, prompts, vllm_eval
from llmhub.config import RunConfig, apply_overrides
from llmhub.data import load_split
from llmhub.generate import decode_new, generate, prompt_ids
from llmhub.results import write_json


def read_bandwidth() -> float:
    """Bytes/s of streaming a 512 MiB fp32 tensor through a reduction (best of 3)."""
    t = torch.ones(128 * 2**20)
    t.sum()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        t.sum()
        best = min(best, time.perf_counter() - start)
    return t.numel() * 4 / best


class ForwardClock:
    """Seconds, calls and sizes of the model's prefill calls and decode steps (forward hooks)."""

    def __init__(self, model):
        c = model.config
        # K and V of one token in every layer
        self.kv_bytes_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
        self.kv_bytes_per_token *= model.dtype.itemsize
        self.prefill = {"calls": 0, "seconds": 0.0, "padded_tokens": 0}
        self.decode = {"steps": 0, "seconds": 0.0, "kv_bytes_read": 0}
        self.handles = [model.register_forward_pre_hook(self.start, with_kwargs=True),
                        model.register_forward_hook(self.stop, with_kwargs=True)]

    def start(self, module, args, kwargs):
        self.t0 = time.perf_counter()

    def stop(self, module, args, kwargs, output):
        seconds = time.perf_counter() - self.t0
        rows, new = kwargs["input_ids"].shape
        if new > 1:
            self.prefill["calls"] += 1
            self.prefill["seconds"] += seconds
            self.prefill["padded_tokens"] += rows * new
        else:
            self.decode["steps"] += 1
            self.decode["seconds"] += seconds
            self.decode["kv_bytes_read"] += kwargs["attention_mask"].numel() * self.kv_bytes_per_token

    def remove(self):
        for h in self.handles:
            h.remove()


def run(model, tok, texts, batch_size, max_new_tokens, **kw) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = generate(model, tok, texts, "causal", max_new_tokens, batch_size=batch_size, max_source_length=2048,
                   progress=False, **kw)
    return out, time.perf_counter() - start


def vllm_arm(tok, texts: list[str], path: str, dtype: torch.dtype, max_new_tokens: int) -> tuple[list[str], dict]:
    """The vLLM engine on the prompts: predictions and timings."""
    ids = prompt_ids(tok, texts, 2048)
    start = time.perf_counter()
    answer = vllm_eval.generate_ids(path, ids, max_new_tokens, vllm_eval.DTYPES[str(dtype)], progress=False)
    wall = time.perf_counter() - start
    outputs = decode_new(tok, answer["tokens"])
    new_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs)
    return outputs, {"seconds_with_startup": wall, "startup_seconds": answer["startup_seconds"],
                     "seconds": answer["generate_seconds"], "examples_per_second": len(texts) / answer["generate_seconds"],
                     "examples_per_second_with_startup": len(texts) / wall, "generated_tokens": new_tokens,
                     "generated_tokens_per_second": new_tokens / answer["generate_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", default="data")
    ap.add_argument("--examples", type=int, default=200)
    ap.add_argument("--one_by_one_examples", type=int, default=40)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--cache", choices=["dynamic", "static"], default="dynamic")
    ap.add_argument("--max_new_tokens", type=int, default=60)
    ap.add_argument("--no_vllm", action="store_true", help="leave out the vLLM arm")
    ap.add_argument("--output", default="results/benchmarks/generation.json")
    args = ap.parse_args()

    cfg = apply_overrides(RunConfig(), {"task": "summarization", "data_dir": args.data_dir})
    rows = load_split(cfg.data, "test")[: args.examples]
    path = models.resolve_path("smollm2-135m")
    tok = models.load_tokenizer(path, "causal")
    texts = [prompts.render("causal", "generation", r["input"], "zero-shot") for r in rows]
    dtype = models.resolve_dtype("auto")
    report = {"examples": len(rows), "one_by_one_examples": args.one_by_one_examples,
              "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "cache": args.cache,
              "batched_dtype": str(dtype), "load_average_before": os.getloadavg(),
              "threads": torch.get_num_threads()}
    bandwidth = read_bandwidth()
    fp32 = models.load_base_model(path, "causal", torch.float32)
    n_small = args.one_by_one_examples
    small, seconds = run(fp32, tok, texts[:n_small], 1, args.max_new_tokens)
    report["one_by_one"] = {"seconds": seconds, "examples": n_small, "examples_per_second": n_small / seconds}
    print(f"one_by_one fp32: {seconds:.1f} s for {n_small} ({n_small / seconds:.2f} ex/s)", flush=True)
    model = fp32 if dtype == torch.float32 else models.load_base_model(path, "causal", dtype)
    kw = {"cache_implementation": "static"} if args.cache == "static" else {}
    clock = ForwardClock(model)
    outputs, seconds = run(model, tok, texts, args.batch_size, args.max_new_tokens, **kw)
    clock.remove()
    new_tokens = sum(len(tok(o, add_special_tokens=False)["input_ids"]) + 1 for o in outputs)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bound = args.batch_size * bandwidth / weight_bytes
    report["batched"] = {"seconds": seconds, "examples_per_second": len(rows) / seconds,
                         "generated_tokens": new_tokens, "generated_tokens_per_second": new_tokens / seconds}
    report["bandwidth_bytes_per_second"] = bandwidth
    report["weight_bytes"] = weight_bytes
    report["bound_tokens_per_second"] = bound
    report["fraction_of_bound"] = new_tokens / seconds / bound
    # decode steps: the weights are read once per step (5.8 ms at 257 MiB and 46 GB/s), the KV cache too
    d, p = clock.decode, clock.prefill
    step = d["seconds"] / d["steps"]
    step_bound = weight_bytes / bandwidth
    kv_step_bound = step_bound + d["kv_bytes_read"] / d["steps"] / bandwidth
    non_embedding = sum(q.numel() for n, q in model.named_parameters() if "embed" not in n)
    prefill_flops = 2 * non_embedding * p["padded_tokens"]
    report["prefill"] = dict(p, flops_per_second=prefill_flops / p["seconds"])
    report["decode"] = dict(d, seconds_per_step=step, bound_seconds_per_step=step_bound,
                            bound_with_kv_seconds_per_step=kv_step_bound)
    report["other_seconds"] = seconds - p["seconds"] - d["seconds"]  # generate's loop, tokenising, decoding
    report["decode_fraction_of_bound"] = step_bound / step
    report["decode_fraction_of_bound_with_kv"] = kv_step_bound / step
    print(f"batched {dtype} batch {args.batch_size} {args.cache} cache: {seconds:.1f} s for {len(rows)} "
          f"({len(rows) / seconds:.2f} ex/s), {new_tokens / seconds:.0f} generated tokens/s; bound "
          f"{bound:.0f} tokens/s ({bandwidth / 1e9:.1f} GB/s / {weight_bytes / 2**20:.0f} MiB x {args.batch_size})",
          flush=True)
    print(f"prefill: {p['seconds']:.1f} s for {p['padded_tokens']} padded prompt tokens in {p['calls']} calls "
          f"({prefill_flops / p['seconds'] / 1e9:.0f} GFLOP/s); decode: {d['seconds']:.1f} s for {d['steps']} steps "
          f"({step * 1e3:.1f} ms each; bound {step_bound * 1e3:.1f} ms of weights, {kv_step_bound * 1e3:.1f} ms with "
          f"the KV cache: {step_bound / step:.3f} / {kv_step_bound / step:.3f} of it); "
          f"other {report['other_seconds']:.1f} s", flush=True)
    if dtype == torch.float32:
        differ = [(r["id"], a, b) for r, a, b in zip(rows, small, outputs) if a != b]
        for rid, a, b in differ:
            at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            print(f"differs {rid} at char {at}: one-by-one {a[at:at + 40]!r} vs batched {b[at:at + 40]!r}")
        report["identical_predictions"] = f"{n_small - len(differ)}/{n_small}"
        report["differing_ids"] = [d[0] for d in differ]
        print(f"identical predictions (fp32, one by one vs batched): {report['identical_predictions']}")
    seed = report["one_by_one"]["examples_per_second"]
    report["speedup"] = report["batched"]["examples_per_second"] / seed
    refs = [r["target"] for r in rows]
    report["batched"]["rouge"] = metrics.rouge_metrics(refs, outputs)
    report["speedup_vs_seed"] = report["speedup"]
    if not args.no_vllm and vllm_eval.python().is_file():
        vllm_outputs, report["vllm"] = vllm_arm(tok, texts, path, dtype, args.max_new_tokens)
        v = report["vllm"]
        v["rouge"] = metrics.rouge_metrics(refs, vllm_outputs)
        v["speedup"], v["speedup_with_startup"] = v["examples_per_second"] / seed, v["examples_per_second_with_startup"] / seed
        report["speedup_vs_seed"] = max(report["speedup"], v["speedup"])
        print(f"vllm {dtype}: {v['seconds']:.1f} s for {len(rows)} ({v['examples_per_second']:.2f} ex/s), "
              f"{v['generated_tokens_per_second']:.0f} generated tokens/s; with its start-up of {v['startup_seconds']:.1f} s: "
              f"{v['seconds_with_startup']:.1f} s ({v['examples_per_second_with_startup']:.2f} ex/s)", flush=True)
        print(f"ROUGE-1 / ROUGE-L on {len(rows)}: transformers {report['batched']['rouge']['rouge1']:.2f} / "
              f"{report['batched']['rouge']['rougeL']:.2f}, vllm {v['rouge']['rouge1']:.2f} / {v['rouge']['rougeL']:.2f}")
    report["load_average_after"] = os.getloadavg()
    write_json(args.output, report)
    print(f"load average {report['load_average_before'][0]:.2f} -> {report['load_average_after'][0]:.2f}")
    v = report.get("vllm", {})
    print(f"speedup={report['speedup']:.2f} vllm_speedup={v.get('speedup', float('nan')):.2f} "
          f"vllm_speedup_with_startup={v.get('speedup_with_startup', float('nan')):.2f} "
          f"speedup_vs_seed={report['speedup_vs_seed']:.2f} fraction_of_bound={report['fraction_of_bound']:.3f} "
          f"decode_fraction_of_bound={report['decode_fraction_of_bound']:.3f}")


if __name__ == "__main__":
    main()
