"""One experiment, end to end: validate -> load -> train -> save -> evaluate -> results files.

Layout of an experiment directory:
  config.yaml        the resolved config (re-run it with --config)
  model/             the adapter (or full model) and tokenizer
  predictions.jsonl  one {"id", "reference", "prediction"} row per test example
  results.json       {"metrics", "config", "train", "eval", "provenance"}; written last, so its
                     presence marks a finished run
  checkpoints/       Trainer checkpoints while training (removed once the run finished)
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import data as data_mod
from . import generate, methods, metrics, models
from .config import RunConfig
from .errors import HubError
from .results import cost_usd, provenance, read_results, write_json, write_jsonl


@dataclass
class Setup:
    """Everything validated before any file is written or any weight is loaded."""
    cfg: RunConfig
    model_config: object
    path: str
    family: str
    style: str
    kind: str
    splits: dict
    labels: list[str]


def prepare(cfg: RunConfig, splits=("train", "test"), mode: str = "finetune") -> Setup:
    """Check the config and read the data; every bad input fails here with one line."""
    methods.check_method(cfg.method.method)
    spec = data_mod.task_spec(cfg.data)
    model_config = models.load_config(cfg.model.pretrained_ckpt)
    family = models.family_of(model_config, cfg.model.family)
    models.resolve_dtype(cfg.model.torch_dtype)
    if mode == "finetune" and "train" in splits:
        if family == "encoder" and spec.kind != "classification":
            raise HubError(f"encoder model '{cfg.model.pretrained_ckpt}' only does classification tasks")
        methods.peft_config(cfg.method, model_config, family)  # unknown targets fail before loading
    rows = data_mod.load_task(cfg.data, cfg.train.seed, splits)
    labels = data_mod.label_set(rows.get("train") or rows["test"]) if spec.kind == "classification" else []
    return Setup(cfg, model_config, models.resolve_path(cfg.model.pretrained_ckpt), family,
                 models.PROMPT_STYLE[family], spec.kind, rows, labels)


def check_output_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a finished run; an unfinished one needs --resume or --overwrite."""
    if not out.exists() or not any(out.iterdir()):
        return
    if overwrite:
        shutil.rmtree(out)
        return
    if (out / "results.json").exists():
        raise HubError(f"{out} already holds a finished run; pass --overwrite to replace it")
    if not resume:
        raise HubError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite")


def is_main_rank() -> bool:
    """True in a single process, and in rank 0 of `torchrun` / `accelerate launch` / mpirun runs."""
    for var in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        if var in os.environ:
            return int(os.environ[var]) == 0
    return True


def load_for_training(s: Setup):
    from transformers import set_seed

    cfg = s.cfg
    set_seed(cfg.train.seed)  # before the base model's new heads and the adapter are initialised
    tok = models.load_tokenizer(s.path, s.family)
    model = models.load_base_model(s.path, s.family, models.resolve_dtype(cfg.model.torch_dtype),
                                   quantize_4bit=cfg.method.method == "qlora",
                                   num_labels=len(s.labels) or None, label_names=s.labels)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return tok, methods.wrap(model, cfg.method, s.family)


def load_trained(exp_dir: Path, cfg: RunConfig, family: str):
    """Base + adapter (or the full model) of a finished experiment."""
    model_dir = exp_dir / "model"
    if not model_dir.is_dir():
        raise HubError(f"{exp_dir} has no trained model (missing {model_dir})")
    tok = models.load_tokenizer(str(model_dir), family)
    dtype = models.resolve_dtype(cfg.model.torch_dtype)
    if (model_dir / "adapter_config.json").exists():
        from peft import PeftModel

        base = models.load_base_model(models.resolve_path(cfg.model.pretrained_ckpt), family, dtype,
                                      quantize_4bit=cfg.method.method == "qlora",
                                      label_names=_labels(model_dir))
        model = PeftModel.from_pretrained(base, model_dir)
    else:
        model = models.load_base_model(str(model_dir), family, dtype)
    return tok, model


def _labels(model_dir: Path) -> list[str] | None:
    """The label names an encoder head was trained on (its id -> label map for predictions)."""
    import json

    labels = model_dir / "labels.json"
    return json.loads(labels.read_text()) if labels.exists() else None


def predict(model, tok, s: Setup, rows: list[dict], progress: bool = True) -> list[str]:
    """Predictions for rows with the fine-tuning template: labels for encoders, generated (and
    cleaned) text otherwise. Zero-/few-shot prompting lives in baseline.py."""
    cfg = s.cfg
    texts = [r["input"] for r in rows]
    if s.family == "encoder":
        return generate.classify(model, tok, texts, cfg.eval.eval_batch_size, cfg.data.max_source_length,
                                 progress)
    prompt_texts = generate.build_prompts(tok, s.style, s.kind, texts, cfg.data.max_source_length)
    max_new = cfg.eval.max_new_tokens or data_mod.task_spec(cfg.data).max_new_tokens
    tok.padding_side = "left" if s.family == "causal" else "right"
    return generate.generate(model, tok, prompt_texts, s.family, max_new, cfg.eval.eval_batch_size,
                             max_source_length=cfg.data.max_source_length, progress=progress)


def score(s: Setup, rows: list[dict], outputs: list[str]) -> tuple[dict, list[dict]]:
    """Metrics and prediction rows for one evaluation."""
    if s.kind == "classification":
        matched = [metrics.match_label(o, s.labels) if s.family != "encoder" else o for o in outputs]
        result = metrics.classification_metrics([r["target"] for r in rows], matched, s.labels)
        preds = [{"id": r["id"], "reference": r["target"], "prediction": o, "label": m}
                 for r, o, m in zip(rows, outputs, matched)]
    else:
        refs = [r.get("references") or r["target"] for r in rows]
        result = metrics.rouge_metrics(refs, outputs)
        preds = [{"id": r["id"], "reference": ref, "prediction": o} for r, ref, o in zip(rows, refs, outputs)]
    return result, preds


def evaluate_into(exp_dir: Path, model, tok, s: Setup, extra: dict) -> dict:
    """Predict the test split, score it, write predictions.jsonl then results.json."""
    rows = s.splits["test"]
    start = time.perf_counter()
    outputs = predict(model, tok, s, rows)
    seconds = time.perf_counter() - start
    result, preds = score(s, rows, outputs)
    write_jsonl(exp_dir / "predictions.jsonl", preds)
    record = {"metrics": result, "config": s.cfg.to_dict(), "mode": "finetune", **extra,
              "eval": {"seconds": seconds, "examples": len(rows),
                       "examples_per_second": len(rows) / seconds if seconds else None},
              "provenance": provenance(s.cfg.train.seed)}
    write_json(exp_dir / "results.json", record)
    return record


def train_experiment(cfg: RunConfig, overwrite: bool = False, resume: bool = False) -> dict:
    """Fine-tune, save the adapter and tokenizer, evaluate; returns the results record."""
    from . import train as train_mod

    s = prepare(cfg)
    out = Path(cfg.output_dir)
    # Only rank 0 vets, clears and creates the directory: another rank seeing rank 0's config.yaml
    # would take it for an unfinished run, and two ranks clearing it with --overwrite would race.
    # Other ranks write nothing there before the first DDP step, which waits for rank 0.
    main_rank = is_main_rank()
    if main_rank:
        check_output_dir(out, overwrite, resume)
    tok, model = load_for_training(s)
    trainable, total = methods.trainable_parameters(model)
    label2id = {label: i for i, label in enumerate(s.labels)}
    features = train_mod.tokenize_rows(s.splits["train"], tok, s.family, s.style, s.kind, cfg.data, label2id)
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        cfg.dump(out / "config.yaml")
    stats = train_mod.fit(model, tok, features, s.family, cfg, out / "checkpoints", resume)
    if not stats.pop("is_main_process"):
        return {}  # in multi-process runs exactly one rank saves, evaluates and writes results
    tmp = out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if s.labels:
        write_json(tmp / "labels.json", s.labels)
    shutil.rmtree(out / "model", ignore_errors=True)
    tmp.rename(out / "model")
    stats.update(trainable_params=trainable, total_params=total,
                 cost_per_hour_usd=cfg.train.cost_per_hour,
                 cost_usd=cost_usd(stats["seconds"], cfg.train.cost_per_hour))
    record = evaluate_into(out, model, tok, s, {"train": stats})
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record


def evaluate_experiment(exp_dir: str | Path, overrides: dict | None = None) -> dict:
    """Re-evaluate a trained experiment (the *_inference.py scripts)."""
    from .config import apply_overrides, load_yaml

    exp_dir = Path(exp_dir)
    if not (exp_dir / "config.yaml").is_file():
        raise HubError(f"{exp_dir} is not an experiment directory (no config.yaml)")
    cfg = apply_overrides(apply_overrides(RunConfig(), load_yaml(exp_dir / "config.yaml")), overrides or {})
    s = prepare(cfg, splits=("test",), mode="evaluate")
    if s.kind == "classification" and (exp_dir / "model" / "labels.json").exists():
        import json

        s.labels = json.loads((exp_dir / "model" / "labels.json").read_text())
    tok, model = load_trained(exp_dir, cfg, s.family)
    previous = read_results(exp_dir / "results.json") if (exp_dir / "results.json").exists() else {}
    return evaluate_into(exp_dir, model, tok, s, {"train": previous.get("train")})

