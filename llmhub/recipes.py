"""Per-model-folder defaults as data: what each flan-t5/, llama2/, ... script sets before flags.

Values follow the seeds' recipes (see the model folders' READMEs); flags and --config override them.
"""
from __future__ import annotations

from .errors import HubError

_CAUSAL_QLORA = {
    "method": {"method": "qlora", "lora_alpha": 16, "lora_dropout": 0.1},
    "train": {"learning_rate": 2e-4, "warmup_ratio": 0.03, "lr_scheduler": "constant",
              "max_grad_norm": 0.3, "batch_size": 4, "grad_accum": 4, "epochs": 5},
    "data": {"max_source_length": 512},
}
_CAUSAL_TASKS = {
    "classification": {"method": {"lora_r": 8}, "data": {"task": "classification", "clean": "strip"}},
    "summarization": {"method": {"lora_r": 64}, "data": {"task": "summarization"}},
}

RECIPES: dict[str, dict] = {
    "flan-t5": {
        "base": {"model": {"pretrained_ckpt": "google/flan-t5-large"},
                 "method": {"method": "lora", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1},
                 "train": {"learning_rate": 1e-3, "epochs": 5, "batch_size": 8}},
        "classification": {"data": {"task": "classification", "clean": "strip"}},
        "summarization": {"data": {"task": "summarization"}},
    },
    "llama2": {"base": {**_CAUSAL_QLORA, "model": {"pretrained_ckpt": "meta-llama/Llama-2-7b-hf"}},
               **_CAUSAL_TASKS},
    # Falcon and RedPajama (GPT-NeoX) fuse Q, K and V into one `query_key_value` projection; their
    # LoRA targets come from models.LORA_TARGETS by architecture, so the rows only name the checkpoint.
    "falcon": {"base": {**_CAUSAL_QLORA, "model": {"pretrained_ckpt": "tiiuae/falcon-7b"}},
               **_CAUSAL_TASKS},
    # Fine-tuning starts from the Base checkpoint; the zero-/few-shot baselines use the Instruct one,
    # as the original study did.
    "redpajama": {"base": {**_CAUSAL_QLORA,
                           "model": {"pretrained_ckpt": "togethercomputer/RedPajama-INCITE-Base-3B-v1"}},
                  "baseline": {"model": {"pretrained_ckpt": "togethercomputer/RedPajama-INCITE-Instruct-3B-v1"}},
                  **_CAUSAL_TASKS},
    # Encoder baselines of the sample-efficiency tables: sequence classification, full fine-tuning.
    "bert": {"base": {"model": {"pretrained_ckpt": "bert-base-uncased"},
                      "method": {"method": "full", "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1},
                      "train": {"learning_rate": 2e-5, "epochs": 5, "batch_size": 32},
                      "data": {"task": "classification", "clean": "strip", "max_source_length": 512}},
             "classification": {}},
}
TASK_ALIASES = {"dialogsum": "summarization", "custom": "summarization"}


def merge(base: dict, over: dict) -> dict:
    """Deep merge: nested sections combine key by key, `over` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def defaults(model: str, task: str) -> dict:
    """The overrides a model folder applies for a task, before any flag."""
    if model not in RECIPES:
        raise HubError(f"unknown model folder '{model}'; allowed: {', '.join(RECIPES)}")
    recipe = RECIPES[model]
    task_over = recipe.get(task) or recipe.get(TASK_ALIASES.get(task, ""), {})
    out = merge(recipe["base"], task_over)
    if task not in recipe:
        out = merge(out, {"data": {"task": task}})
    return out


def baseline_defaults(model: str, task: str) -> dict:
    """defaults() plus the folder's `baseline` row (e.g. RedPajama's Instruct checkpoint)."""
    return merge(defaults(model, task), RECIPES[model].get("baseline", {}))
