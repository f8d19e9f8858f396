"""Zero-shot and few-shot baselines: the base model, no adapter, prompted through `prompts.render`.

Token budget, per model. The context C is the model's position limit (config
`max_position_embeddings`, else the tokenizer's `model_max_length`, else --max_source_length for
models with no position limit). A causal model must fit prompt + answer in C, so the prompt budget
is B = C - max_new_tokens; a seq2seq encoder reads the prompt alone, so B = C.

Few-shot examples share what is left of B after the instructions, the examples' templates and labels
(or reference summaries), and a reserve R = min(max_source_length, B // 2) kept for the test input.
Each example's *input* is shortened to its share; its answer is kept whole, so no example is ever cut
mid-way. If the shares fall below MIN_EXAMPLE_TOKENS the prompt cannot fit and the run stops with one
line. Example: Falcon-7B (C = 2048), classification (10 new tokens): B = 2048 - 10 = 2038 and
R = min(512, 1019) = 512, so the 20 examples' inputs share 1526 tokens minus the instructions and
their 20 templates and labels; results.json lists each example's input length after fitting.

A test prompt longer than B is not dropped and does not crash the run: its input is shortened to
fit (instructions and examples stay whole), it is predicted and scored like any other, and it is
counted in results.json (`prompts.over_context`) and flagged in predictions.jsonl.
"""
from __future__ import annotations

import time
from pathlib import Path

from . import data as data_mod
from . import models, prompts, vllm_eval
from .config import RunConfig
from .errors import HubError
from .generate import count_tokens, fit_input
from .results import build_record, write_json, write_jsonl

MODES = tuple(m for m in prompts.MODES if m != "finetune")  # ("zero-shot", "few-shot")
MIN_EXAMPLE_TOKENS = 8  # an example input shorter than this shows the model next to nothing
_UNBOUNDED = 1_000_000  # tokenizers without a limit report model_max_length as ~1e30


def context_length(model_config, tokenizer, fallback: int) -> int:
    """Tokens the model can attend to: its position limit, else the tokenizer's, else `fallback`."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _UNBOUNDED:
        return limit
    return fallback


def fit_examples(tok, style: str, kind: str, labels: list[str], examples: list[dict], budget: int,
                 reserve: int, model_name: str, fmt: prompts.PromptFormat = prompts.PromptFormat()) -> list[dict]:
    """Shorten each example's input so instructions + examples leave `reserve` tokens of `budget`."""
    def prefix(exs):  # everything before the test input
        return fmt.render(style, kind, "", "few-shot", labels, exs, tok)

    fixed = count_tokens(tok, prefix([{**ex, "input": ""} for ex in examples]))
    share = (budget - reserve - fixed) // len(examples)
    for _ in range(8):  # re-tokenising decoded text can merge differently; shrink until it fits
        if share < MIN_EXAMPLE_TOKENS:
            need = fixed + reserve + MIN_EXAMPLE_TOKENS * len(examples)
            raise HubError(f"few-shot prompt cannot fit model '{model_name}': {len(examples)} examples need "
                           f"at least {need} tokens, the budget is {budget} (context minus max_new_tokens); "
                           "use --prompt zero-shot, a longer-context model, or lower --max_new_tokens")
        fitted = [{**ex, "input": fit_input(tok, ex["input"], share)} for ex in examples]
        excess = count_tokens(tok, prefix(fitted)) - (budget - reserve)
        if excess <= 0:
            return fitted
        share -= max(1, -(-excess // len(examples)))
    raise HubError(f"few-shot prompt for model '{model_name}' does not settle within the budget of {budget} tokens")


def build_prompts(tok, style: str, kind: str, labels: list[str], texts: list[str], mode: str,
                  examples: list[dict] | None, budget: int,
                  fmt: prompts.PromptFormat = prompts.PromptFormat()) -> tuple[list[str], list[int], list[bool]]:
    """Prompts for test inputs; those over `budget` get their input shortened and are flagged."""
    empty = count_tokens(tok, fmt.render(style, kind, "", mode, labels, examples, tok))
    if empty >= budget:
        raise HubError(f"the {mode} instructions alone take {empty} tokens, the prompt budget is {budget}")
    out, lengths, over = [], [], []
    for text in texts:
        prompt = fmt.render(style, kind, text, mode, labels, examples, tok)
        n = count_tokens(tok, prompt)
        over.append(n > budget)
        room = budget - empty
        while n > budget and room > 0:
            prompt = fmt.render(style, kind, fit_input(tok, text, room), mode, labels, examples, tok)
            n, room = count_tokens(tok, prompt), room - max(1, n - budget)
        out.append(prompt)
        lengths.append(n)
    return out, lengths, over


def run_baseline(cfg: RunConfig, mode: str, overwrite: bool = False) -> dict:
    """Evaluate the base model with a zero- or few-shot prompt; write an experiment directory."""
    from .experiment import prepare, score
    from .rundir import check_output_dir, replace_run
    from .generate import generate

    if mode not in MODES:
        raise HubError(f"unknown baseline prompt '{mode}'; allowed: {', '.join(MODES)}")
    if cfg.data.task not in data_mod.TASK_NAMES:
        raise HubError(f"no baseline prompt for task '{cfg.data.task}'; the prompt module knows: "
                       f"{', '.join(data_mod.TASK_NAMES)}")
    spec = data_mod.task_spec(cfg.data)
    need_train = mode == "few-shot" or spec.kind == "classification"  # examples, or the class list
    s = prepare(cfg, splits=("train", "test") if need_train else ("test",), mode=mode)
    if s.family == "encoder":
        raise HubError(f"'{cfg.model.pretrained_ckpt}' is an encoder with no text output; "
                       "zero-/few-shot baselines need a causal or seq2seq model")
    vllm = cfg.eval.eval_engine == "vllm"
    if vllm:  # the base model, 4-bit when the run asks for it
        vllm_eval.check(s.family, "qlora" if cfg.method.method == "qlora" else None)
    out = Path(cfg.output_dir)
    plan = check_output_dir(out, overwrite, resume=True)

    tok = models.load_tokenizer(s.path, s.family)
    fmt = s.prompt_format(tok)  # auto: the model's chat template where it has one
    max_new = cfg.eval.max_new_tokens or spec.max_new_tokens
    context = context_length(s.model_config, tok, cfg.data.max_source_length)
    budget = context - (max_new if s.family == "causal" else 0)
    if budget <= 0:
        raise HubError(f"max_new_tokens {max_new} leaves no room for a prompt in the context of {context}")
    examples = None
    if mode == "few-shot":
        chosen = prompts.select_examples(s.splits["train"], s.kind, s.labels, cfg.train.seed)
        reserve = min(cfg.data.max_source_length, budget // 2)
        examples = fit_examples(tok, s.style, s.kind, s.labels, chosen, budget, reserve,
                                cfg.model.pretrained_ckpt, fmt)
    rows = s.splits["test"]
    texts, lengths, over = build_prompts(tok, s.style, s.kind, s.labels, [r["input"] for r in rows],
                                         mode, examples, budget, fmt)

    if not vllm:
        model = models.load_base_model(s.path, s.family, s.dtype, quantize_4bit=cfg.method.method == "qlora")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
    if plan == "replace":  # the old run goes only once the new one is ready to start
        replace_run(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.dump(out / "config.yaml")
    (out / "prompt_example.txt").write_text(texts[0])  # what the model saw, for a human to check
    start = time.perf_counter()
    if vllm:
        outputs = vllm_eval.generate(tok, texts, s.path, max_new, s.dtype, budget)
    else:
        outputs = generate(model, tok, texts, s.family, max_new, cfg.eval.eval_batch_size, max_source_length=budget)
    seconds = time.perf_counter() - start
    result, preds = score(s, rows, outputs)
    for p, n, o in zip(preds, lengths, over):
        p.update(prompt_tokens=n, over_context=o)
    write_jsonl(out / "predictions.jsonl", preds)
    record = build_record(
        cfg, s.splits, s.path, mode, result, seconds, len(rows), train=None,
        prompts={"format": "chat" if fmt.chat else "plain", "context_length": context, "prompt_budget": budget, "max_new_tokens": max_new,
                    "base_4bit": cfg.method.method == "qlora",
                    "over_context": sum(over), "over_context_ids": [r["id"] for r, o in zip(rows, over) if o],
                    "max_prompt_tokens": max(lengths), "mean_prompt_tokens": sum(lengths) / len(lengths),
                    "examples": [{"id": ex["id"], "target": ex["target"], "input_tokens":
                                  count_tokens(tok, ex["input"], special_tokens=False)}
                                 for ex in examples or []]})
    write_json(out / "results.json", record)
    return record


def output_dir(model: str | None, task: str, mode: str) -> dict:
    """A baseline's default output directory, named after the run (flags and --set override it)."""
    return {"output_dir": f"experiments/{model or 'baseline'}-{task}-{mode}"}
