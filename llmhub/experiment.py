"""One experiment, end to end: validate -> load -> train -> save -> evaluate -> results files.

Layout of an experiment directory:
  config.yaml        the resolved config (re-run it with --config)
  model/             the adapter (or full model) and tokenizer
  predictions.jsonl  one {"id", "reference", "prediction"} row per test example
  predictions.partial.jsonl  the generated batches while evaluation runs (a killed one resumes from them)
  results.json       {"metrics", "config", "train", "validation", "eval", "provenance"}; written last, so its
                     presence marks a finished run
  checkpoints/       Trainer checkpoints while training (removed once the run finished)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import data as data_mod
from . import generate, methods, metrics, models, prompts, vllm_eval
from .config import RunConfig, validate
from .errors import HubError
from .results import (atomic_dir, build_record, cost_usd, finished_record, set_aside_corrupt, write_json,
                      write_jsonl)
from .rundir import (LABELS_FILE, PARTIAL, check_output_dir, check_resume_config, differences, disk_errors,
                     replace_run, trained_labels)

TRAIN_STATS = "train_stats.json"  # in model/: training's record; model/ appears (renamed) only when complete
# What `evaluate` may change: where the data is and how it is evaluated, not how the model was trained.
EVAL_KEYS = ("data_dir", "test_file", "test_samples", "eval_batch_size", "max_new_tokens", "torch_dtype",
             "eval_engine")


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
    dtype: object = None  # torch dtype of the weights: cfg.model.torch_dtype resolved on this machine, once
    prompt_mode: str = "finetune"  # finetune (training and evaluation) | zero-shot | few-shot

    def prompt_format(self, tokenizer) -> prompts.PromptFormat:
        """The run's template and chat setting for this tokenizer (`auto`: chat only for baselines)."""
        return prompts.for_run(self.cfg.data, tokenizer, self.prompt_mode)


def prepare(cfg: RunConfig, splits=("train", "test"), mode: str = "finetune") -> Setup:
    """Check the config and read the data; every bad input fails here with one line. A template
    given as a file is read into the config here, so config.yaml holds the text itself."""
    validate(cfg)
    cfg.data.prompt_template = prompts.load_template(cfg.data.prompt_template)
    methods.check_method(cfg.method.method)
    spec = data_mod.task_spec(cfg.data)
    model_config = models.load_config(cfg.model.pretrained_ckpt)
    family = models.family_of(model_config, cfg.model.family)
    dtype = models.resolve_dtype(cfg.model.torch_dtype)
    if mode in ("finetune", "evaluate") and family != "encoder":
        _check_prompt_room(cfg, family, spec.kind)
    if mode in ("finetune", "evaluate") and "test" in splits and cfg.eval.eval_engine == "vllm":
        vllm_eval.check(family, cfg.method.method)  # a screening run (no test split) never evaluates
    if mode == "finetune" and "train" in splits:
        if family == "encoder" and spec.kind != "classification":
            raise HubError(f"encoder model '{cfg.model.pretrained_ckpt}' only does classification tasks")
        methods.peft_config(cfg.method, model_config, family)  # unknown targets fail before loading
    rows = data_mod.load_task(cfg.data, cfg.train.seed, splits)
    if mode == "finetune":
        from .tracking import check_tracker

        check_tracker(cfg.train.report_to)
    if mode == "finetune" and cfg.train.early_stopping_patience and cfg.train.eval_steps is None:
        raise HubError("early_stopping_patience needs --eval_steps (how often the validation loss is evaluated)")
    if mode == "finetune" and "validation" in splits and cfg.train.eval_steps and not rows.get("validation"):
        raise HubError(f"eval_steps needs a validation split; task '{cfg.data.task}' has none "
                       "(give --validation_file, or a validation_fraction > 0)")
    labels = data_mod.label_set(rows.get("train") or rows["test"]) if spec.kind == "classification" else []
    if labels and "train" in rows and "test" in rows:
        unseen = sorted({r["target"] for r in rows["test"]} - set(labels))
        if unseen:
            print(f"warning: {len(unseen)} test label(s) never occur in the train split ({', '.join(unseen[:5])}); "
                  "their examples cannot be predicted right", file=sys.stderr)
    return Setup(cfg, model_config, models.resolve_path(cfg.model.pretrained_ckpt), family,
                 models.PROMPT_STYLE[family], spec.kind, rows, labels, dtype,
                 "finetune" if mode in ("finetune", "evaluate") else mode)


def _check_prompt_room(cfg: RunConfig, family: str, kind: str, min_input: int = 8) -> None:
    """max_source_length must leave room for the input beside the fine-tuning prompt's own tokens."""
    tok = models.load_tokenizer(models.resolve_path(cfg.model.pretrained_ckpt), family)
    overhead = generate.template_overhead(tok, models.PROMPT_STYLE[family], kind, prompts.for_run(cfg.data, tok))
    if cfg.data.max_source_length < overhead + min_input:
        raise HubError(f"max_source_length {cfg.data.max_source_length} leaves no room for the input: the prompt "
                       f"template takes {overhead} tokens; allowed: >= {overhead + min_input}")


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
    model = models.load_base_model(s.path, s.family, s.dtype,
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
                                      label_names=trained_labels(model_dir) or None)
        model = PeftModel.from_pretrained(base, model_dir)
    else:
        model = models.load_base_model(str(model_dir), family, dtype)
    return tok, model


def load_for_eval(exp_dir: Path, cfg: RunConfig, family: str):
    """The tokenizer and, for the transformers engine, the model of a finished experiment; vLLM
    loads the model itself (model None)."""
    if cfg.eval.eval_engine == "vllm":
        return models.load_tokenizer(str(exp_dir / "model"), family), None
    return load_trained(exp_dir, cfg, family)


def predict(model, tok, s: Setup, rows: list[dict], trained: Path, progress: bool = True,
            journal: generate.Journal | None = None) -> list[str]:
    """Predictions for rows with the run's fine-tuning prompt format: labels for encoders, generated (and
    cleaned) text otherwise, by `model` (batches kept in `journal`) or, with --eval_engine vllm, by
    vLLM from the experiment directory `trained` (its saved model/).
    Zero-/few-shot prompting lives in baseline.py."""
    cfg = s.cfg
    texts = [r["input"] for r in rows]
    if s.family == "encoder":
        return generate.classify(model, tok, texts, cfg.eval.eval_batch_size, cfg.data.max_source_length,
                                 progress)
    prompt_texts = generate.run_prompts(tok, s.family, s.kind, cfg.data, texts, s.prompt_format(tok))
    max_new = cfg.eval.max_new_tokens or data_mod.task_spec(cfg.data).max_new_tokens
    if cfg.eval.eval_engine == "vllm":
        return vllm_eval.generate_trained(tok, prompt_texts, trained, max_new, s.dtype, cfg.data.max_source_length,
                                            progress)
    return generate.generate(model, tok, prompt_texts, s.family, max_new, cfg.eval.eval_batch_size,
                             max_source_length=cfg.data.max_source_length, progress=progress, journal=journal)


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


def evaluate_into(exp_dir: Path, model, tok, s: Setup, extra: dict, trained: Path) -> dict:
    """Predict the test split with the model of experiment `trained`, score it, write
    predictions.jsonl then results.json into exp_dir (`trained` itself or one of its eval/ folders).
    Generated batches are kept in exp_dir's PARTIAL file until then: a killed evaluation resumes
    from them, and its time counts theirs."""
    rows = s.splits["test"]
    journal = generate.Journal(exp_dir / PARTIAL, context=s.cfg.to_dict())
    start = time.perf_counter()
    outputs = predict(model, tok, s, rows, trained, journal=journal)
    seconds = time.perf_counter() - start + journal.reused_seconds
    if journal.reused:
        print(f"resume: {journal.reused} generated batches taken from {journal.path}", file=sys.stderr)
    result, preds = score(s, rows, outputs)
    write_jsonl(exp_dir / "predictions.jsonl", preds)
    record = build_record(s.cfg, s.splits, s.path, "finetune", result, seconds, len(rows), **extra)
    write_json(exp_dir / "results.json", record)
    journal.remove()
    return record


def train_experiment(cfg: RunConfig, overwrite: bool = False, resume: bool = False) -> dict:
    """Fine-tune, save the adapter and tokenizer, evaluate; returns the results record.

    Everything is validated and the model loaded before an old run is replaced (--overwrite); a
    resumed run whose training had finished (model/ is complete) goes straight to evaluation."""
    s = prepare(cfg, splits=("train", "validation", "test"))
    with disk_errors(Path(cfg.output_dir)):
        return _train(s, overwrite, resume)


def screen_experiment(cfg: RunConfig, resume: bool = True) -> dict:
    """A search's screening run: train (a short run, e.g. max_steps 30) and measure the validation
    loss; the test split is neither read nor scored and no model is kept. results.json has mode
    "screen", `train` and `validation` (llmhub/sweep.py picks the value with the lowest loss)."""
    if not cfg.train.eval_steps:
        raise HubError("a screening run needs eval_steps (its result is the validation loss)")
    s = prepare(cfg, splits=("train", "validation"))
    with disk_errors(Path(cfg.output_dir)):
        return _train(s, overwrite=False, resume=resume, test=False)


def _train(s: Setup, overwrite: bool, resume: bool, test: bool = True) -> dict:
    from . import train as train_mod

    cfg = s.cfg
    out = Path(cfg.output_dir)
    # Only rank 0 vets, clears and creates the directory: another rank seeing rank 0's config.yaml
    # would take it for an unfinished run, and two ranks clearing it with --overwrite would race.
    # Other ranks write nothing there before the first DDP step, which waits for rank 0.
    main_rank = is_main_rank()
    plan = check_output_dir(out, overwrite, resume) if main_rank else "resume"
    if plan == "resume" and main_rank:
        check_resume_config(out, cfg)
        if (out / "model" / TRAIN_STATS).is_file():  # killed after training: evaluate the saved model
            print(f"resume: training of {out} had finished; evaluating the saved model", file=sys.stderr)
            tok, model = load_for_eval(out, cfg, s.family)
            stats = json.loads((out / "model" / TRAIN_STATS).read_text())
            return _finish(out, model, tok, s, stats)
    tok, model = load_for_training(s)
    trainable, total = methods.trainable_parameters(model)
    label2id = {label: i for i, label in enumerate(s.labels)}
    features, eval_features = (
        train_mod.tokenize_rows(s.splits[split], tok, s.family, s.style, s.kind, cfg.data, label2id)
        if split in s.splits else None for split in ("train", "validation"))
    if main_rank:
        if plan == "replace":  # the new run is ready to start: only now does the old one go
            replace_run(out)
        out.mkdir(parents=True, exist_ok=True)
        if not (out / "config.yaml").exists():  # a resumed run keeps the config it was started with
            cfg.dump(out / "config.yaml")
    stats = train_mod.fit(model, tok, features, s.family, cfg, out / "checkpoints", resume, eval_features)
    if not stats.pop("is_main_process"):
        return {}  # in multi-process runs exactly one rank saves, evaluates and writes results
    stats.update(trainable_params=trainable, total_params=total,
                 cost_per_hour_usd=cfg.train.cost_per_hour,
                 cost_usd=cost_usd(stats["seconds"], cfg.train.cost_per_hour))
    if not test:  # a screening run: its validation loss is the result
        record = build_record(cfg, s.splits, s.path, "screen", {}, 0.0, 0, **_with_validation(stats))
        write_json(out / "results.json", record)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        return record
    with atomic_dir(out / "model") as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if s.labels:
            write_json(tmp / LABELS_FILE, s.labels)
        write_json(tmp / TRAIN_STATS, stats)  # last: a model/ folder is complete by construction
    if cfg.eval.eval_engine == "vllm":  # vLLM loads the saved model: free this one's memory for it
        model = None
    return _finish(out, model, tok, s, stats)


def _with_validation(train: dict | None) -> dict:
    """results.json's "train" and "validation" entries from training's record."""
    train = dict(train or {})
    return {"train": train or None, "validation": train.pop("validation", None)}


def _finish(out: Path, model, tok, s: Setup, stats: dict) -> dict:
    record = evaluate_into(out, model, tok, s, _with_validation(stats), out)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return record


def _eval_name(diff: dict[str, tuple]) -> str:
    """eval/<name> for a re-evaluation: the changed settings (test_samples-100), or "default"."""
    import re

    raw = "_".join(f"{k}-{new}" for k, (_, new) in diff.items()) or "default"
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", raw).strip("-.")[:100] or "default"


def evaluate_experiment(exp_dir: str | Path, overrides: dict | None = None, overwrite: bool = False,
                        name: str | None = None) -> dict:
    """Evaluate a trained experiment (the *_inference.py scripts and `llmhub evaluate`).

    A run without results yet is evaluated in place. A finished run is immutable: evaluating it
    again (with other settings or not) writes EXP/eval/<name>/ (config.yaml, predictions.jsonl,
    results.json), unless --overwrite replaces the run's own results (and its config.yaml's
    evaluation settings)."""
    from .config import apply_overrides, flatten
    from .resolve import resolve

    exp_dir = Path(exp_dir)
    if not (exp_dir / "config.yaml").is_file():
        raise HubError(f"{exp_dir} is not an experiment directory (no config.yaml)")
    over = flatten(overrides or {})
    fixed = sorted(k for k in over if k not in EVAL_KEYS)
    if fixed:
        raise HubError(f"evaluate cannot change {', '.join(fixed)} (fixed by training); "
                       f"allowed: {', '.join(EVAL_KEYS)}")
    trained = resolve(config_file=exp_dir / "config.yaml")
    cfg = validate(apply_overrides(trained, over))
    diff = differences(trained.to_dict(), cfg.to_dict())
    if name is not None and (name in (".", "..") or not name or "/" in name or "\\" in name):
        raise HubError(f"evaluation name {name!r} must be a plain folder name")
    set_aside_corrupt(exp_dir / "results.json")
    previous = finished_record(exp_dir / "results.json")
    in_place = name is None and (overwrite or (previous is None and not diff))
    target = exp_dir if in_place else exp_dir / "eval" / (name or _eval_name(diff))
    if not in_place:
        if target.exists() and not target.is_dir():
            raise HubError(f"{target} is a file, not a folder")
        if finished_record(target / "results.json") is not None and not overwrite:
            raise HubError(f"{target} already holds this evaluation; pass --overwrite to redo it")
    s = prepare(cfg, splits=("test",), mode="evaluate")
    if s.kind == "classification" and trained_labels(exp_dir / "model"):
        s.labels = trained_labels(exp_dir / "model")
    tok, model = load_for_eval(exp_dir, cfg, s.family)
    stats_file = exp_dir / "model" / TRAIN_STATS
    extra = _with_validation(json.loads(stats_file.read_text()) if stats_file.is_file() else (previous or {}).get("train"))
    extra["validation"] = extra["validation"] or (previous or {}).get("validation")
    with disk_errors(target):
        if target != exp_dir or diff:
            cfg.output_dir = str(target)
            cfg.dump(target / "config.yaml")  # the folder's config describes the results beside it
        return evaluate_into(target, model, tok, s, extra, exp_dir)
