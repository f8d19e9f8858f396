"""The typed run configuration: one tree of dataclasses with defaults and one-line help.

Every leaf name is unique across sections, so each leaf is also a flat command-line flag
(`--lora_r 16`) and a dotted override (`method.lora_r=16`). Unknown keys fail loudly, and the
resolved config written beside every experiment can be fed back with `--config`.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import HubError


def _f(default, help: str, **kw):
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class ModelConfig:
    pretrained_ckpt: str = _f("google/flan-t5-large", "registry short name, hub id or local folder")
    family: str | None = _f(None, "seq2seq | causal | encoder; inferred from the model when unset")
    torch_dtype: str = _f("auto", "auto | float32 | bfloat16 | float16 (auto: bf16 on GPUs and on CPUs where native bf16 matmuls measure faster than fp32, else fp32)",
                          choices=("auto", "float32", "bfloat16", "float16"))


@dataclass
class MethodConfig:
    method: str = _f("lora", "lora | qlora | dora | prefix | prompt | ia3 | full")
    lora_r: int = _f(8, "LoRA rank", ge=1)
    lora_alpha: int = _f(16, "LoRA scaling alpha", ge=1)
    lora_dropout: float = _f(0.1, "dropout on the LoRA branch (also prefix projection dropout)",
                             ge=0, lt=1)
    target_modules: list[str] | None = _f(None, "modules to adapt, or all-linear; default: per-architecture table")
    use_rslora: bool = _f(False, "LoRA/DoRA: scale by alpha/sqrt(r) instead of alpha/r (rank-stabilised)")
    num_virtual_tokens: int = _f(20, "virtual tokens for prefix / prompt tuning", ge=1)
    prefix_projection: bool = _f(False, "prefix tuning: reparameterise the prefix through an MLP")


@dataclass
class DataConfig:
    task: str = _f("summarization", "classification | summarization | dialogsum | custom")
    data_dir: str = _f("data", "folder in the layout written by `llmhub prepare-data`")
    dataset: str | None = _f(None, "custom task: a hub dataset id, a save_to_disk folder, or a JSON/CSV/Parquet file or folder, read with the datasets library (instead of --train_file/--test_file)")
    dataset_config: str | None = _f(None, "--dataset: the dataset's configuration name")
    train_split: str = _f("train", "--dataset: split to train on")
    validation_split: str = _f("validation", "--dataset: validation split, if the dataset has it (else a slice of train)")
    test_split: str = _f("test", "--dataset: split to test on")
    train_file: str | None = _f(None, "custom task: JSONL or CSV training file")
    test_file: str | None = _f(None, "custom task: JSONL or CSV test file")
    validation_file: str | None = _f(None, "custom task: JSONL or CSV validation file (default: a slice of train)")
    validation_fraction: float = _f(0.1, "share of train held out for validation when the task has no validation split (20 Newsgroups, custom data without --validation_file); 0: none",
                                    ge=0, lt=1)
    validation_samples: int | None = _f(None, "validation examples: the first N of a validation split (stratified for classification), or the size of the slice held out of train",
                                        ge=1)
    input_column: str = _f("input", "custom task: column holding the input text")
    target_column: str = _f("target", "custom task: column holding the target text or label")
    kind: str = _f("generation", "custom task: classification | generation")
    clean: str = _f("raw", "20 Newsgroups text: raw | strip (headers, footers, quotes removed)")
    train_sample_fraction: float = _f(1.0, "share of the train split, 0 < F <= 1 (stratified)",
                                       gt=0, le=1)
    train_samples: int | None = _f(None, "exact number of train examples (overrides the fraction)",
                                      ge=1)
    test_samples: int | None = _f(None, "evaluate on N test examples: the first N, stratified for classification (default: all)",
                                     ge=1)
    prompt_format: str = _f("auto", "auto | plain | chat: chat renders prompts through the tokenizer's chat template; auto: chat for zero-/few-shot baselines of models that have one, plain otherwise",
                            choices=("auto", "plain", "chat"))
    prompt_template: str | None = _f(None, 'your own prompt template holding "{input}" (or a file with it), used by training, evaluation, baselines and the server')
    max_source_length: int = _f(512, "tokens kept of each input (prompt included)", ge=16)
    max_target_length: int = _f(128, "tokens kept of each target", ge=1)


@dataclass
class TrainConfig:
    epochs: float = _f(5.0, "training epochs", gt=0)
    learning_rate: float = _f(1e-3, "peak learning rate (Prodigy: use 1.0)", gt=0)
    batch_size: int = _f(8, "examples per device per step", ge=1)
    grad_accum: int = _f(1, "gradient accumulation steps", ge=1)
    optimizer: str = _f("adamw", "adamw | prodigy", choices=("adamw", "prodigy"))
    lr_scheduler: str = _f("constant", "transformers scheduler name, e.g. constant, linear, cosine")
    warmup_ratio: float = _f(0.0, "share of steps spent warming up", ge=0, lt=1)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0: no clipping)", ge=0)
    max_steps: int = _f(-1, "stop after this many optimizer steps (-1: run all epochs)",
                         ge=1, also=-1)
    seed: int = _f(42, "seed for sampling, adapter initialisation and data order",
                    ge=0, le=2**32 - 1)
    group_by_length: bool = _f(True, "batch examples of similar length together")
    gradient_checkpointing: bool | None = _f(None, "recompute activations in the backward pass to save memory: true = whole layers, false = nothing (default: whole layers for qlora; for other bf16 runs the norms and gated-MLP products)")
    save_steps: int = _f(200, "checkpoint every N steps, for --resume", ge=1)
    logging_steps: int = _f(10, "log the loss every N steps", ge=1)
    eval_steps: int | None = _f(None, "evaluate the validation loss every N steps and keep the best checkpoint by it (saved and tested at the end)",
                                ge=1)
    early_stopping_patience: int | None = _f(None, "stop after N evaluations without a lower validation loss (needs --eval_steps)",
                                             ge=1)
    report_to: str = _f("none", "send training logs to: none | tensorboard (EXP/logs/) | mlflow | wandb (the package must be installed)",
                        choices=("none", "tensorboard", "mlflow", "wandb"))
    cost_per_hour: float = _f(1.212, "instance price in USD/hour (default AWS g5.2xlarge)",
                                 ge=0)


EVAL_ENGINES = ("transformers", "vllm")


@dataclass
class EvalConfig:
    eval_batch_size: int = _f(16, "examples per generation batch", ge=1)
    max_new_tokens: int | None = _f(None, "tokens generated per example (default: per task)",
                                     ge=1)
    eval_engine: str = _f("transformers", "where evaluation generates: transformers (this process) | vllm "
                          "(vLLM's offline engine from inference/vllm/.venv; causal: base, LoRA, IA3 or full)",
                          choices=EVAL_ENGINES)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = _f("experiments/run", "experiment directory")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dump(self, path: Path) -> None:
        from .results import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = {"model": ModelConfig, "method": MethodConfig, "data": DataConfig,
            "train": TrainConfig, "eval": EvalConfig}


def leaf_fields() -> dict[str, tuple[str | None, dataclasses.Field]]:
    """Leaf name -> (section or None for top level, field)."""
    out = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            out[f.name] = (section, f)
    out["output_dir"] = (None, next(f for f in dataclasses.fields(RunConfig) if f.name == "output_dir"))
    return out


def _coerce(key: str, value, t):
    """Check/convert one value against a field's (resolved) type; raise HubError naming the key."""
    args = typing.get_args(t)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise HubError(f"config key '{key}' cannot be null")
    base = next((a for a in args if a is not type(None)), t) if args and optional else t
    origin = typing.get_origin(base)
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise HubError(f"config key '{key}' must be a list of strings, got {value!r}")
        return value
    if base is bool:
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.lower() in ("1", "true", "yes")
        if isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise HubError(f"config key '{key}' must be true/false, got {value!r}")
    if base in (int, float):
        what = "an integer" if base is int else "a number"
        bad = isinstance(value, bool) or (base is int and isinstance(value, float) and not value.is_integer())
        try:
            if not bad:
                return base(value)
        except (TypeError, ValueError):
            pass
        raise HubError(f"config key '{key}' must be {what}, got {value!r}")
    if base is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise HubError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value


_BOUNDS = {"gt": (">", lambda v, b: v > b), "ge": (">=", lambda v, b: v >= b),
           "lt": ("<", lambda v, b: v < b), "le": ("<=", lambda v, b: v <= b)}


def allowed(meta) -> str:
    """The allowed values of a field, in words: '>= 1', '> 0 and <= 1', '-1 or >= 1', 'adamw, prodigy'."""
    if "choices" in meta:
        return ", ".join(meta["choices"])
    text = " and ".join(f"{sign} {meta[k]:g}" for k, (sign, _) in _BOUNDS.items() if k in meta)
    return f"{meta['also']} or {text}" if "also" in meta else text


def check_value(key: str, value, meta) -> None:
    """Range (or choice) check of one coerced value against its field's metadata."""
    if value is None:
        return
    if "choices" in meta:
        if value not in meta["choices"]:
            raise HubError(f"unknown {key} '{value}'; allowed: {allowed(meta)}")
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise HubError(f"config key '{key}' must be a finite number, got {value}")
    bounds = [(k, meta[k]) for k in _BOUNDS if k in meta]
    if bounds and value != meta.get("also") and not all(_BOUNDS[k][1](value, b) for k, b in bounds):
        raise HubError(f"config key '{key}' must be {allowed(meta)}, got {value:g}")


def validate(cfg: "RunConfig") -> "RunConfig":
    """Check every field of a config against its range; any entry point (train, baseline, evaluate,
    sweep, the server) calls this before it writes anything. Returns cfg."""
    for name, (section, f) in leaf_fields().items():
        check_value(name, getattr(getattr(cfg, section), name) if section else getattr(cfg, name), f.metadata)
    return cfg


def flatten(overrides: dict) -> dict[str, object]:
    """Nested ({"method": {"lora_r": 4}}), dotted ("method.lora_r") or flat ("lora_r") -> flat."""
    leaves = leaf_fields()
    flat: dict[str, object] = {}
    for key, value in overrides.items():
        if key in SECTIONS and isinstance(value, dict):
            for k, v in value.items():
                flat.update(flatten({f"{key}.{k}": v}))
            continue
        name = key.split(".")[-1]
        section = key.split(".")[0] if "." in key else None
        if name not in leaves or (section is not None and leaves[name][0] != section):
            valid = ", ".join(sorted(leaves))
            raise HubError(f"unknown config key '{key}'; valid keys: {valid}")
        flat[name] = value
    return flat


def apply_overrides(cfg: RunConfig, overrides: dict) -> RunConfig:
    """Return a copy of cfg with overrides merged at every depth (unmentioned keys keep their value)."""
    cfg = RunConfig(**{k: (dataclasses.replace(v) if dataclasses.is_dataclass(v) else v)
                       for k, v in vars(cfg).items()})
    leaves = leaf_fields()
    hints = {s: typing.get_type_hints(c) for s, c in SECTIONS.items()}
    for name, value in flatten(overrides).items():
        section, f = leaves[name]
        if section is None:
            setattr(cfg, name, _coerce(name, value, str))
        else:
            value = _coerce(name, value, hints[section][name])
            check_value(name, value, f.metadata)
            setattr(getattr(cfg, section), name, value)
    return cfg


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HubError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise HubError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise HubError(f"{path}: expected a mapping of config keys")
    return data


def add_flags(parser: argparse.ArgumentParser, defaults: dict | None = None) -> None:
    """One flag per config leaf; the help text comes from the dataclass field."""
    parser.add_argument("--config", help="YAML config to start from (e.g. a run's config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set method.lora_r=16")
    base = apply_overrides(RunConfig(), defaults or {})
    for name, (section, f) in leaf_fields().items():
        current = getattr(getattr(base, section), name) if section else getattr(base, name)
        limits = f"; allowed: {allowed(f.metadata)}" if allowed(f.metadata) and "choices" not in f.metadata else ""
        parser.add_argument(f"--{name}", dest=f"cfg__{name}", default=argparse.SUPPRESS,
                            metavar=name.upper(),
                            help=f"{f.metadata.get('help', '')} (default: {current}{limits})")
