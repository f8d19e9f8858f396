"""Tokenise with dynamic padding and fit with the transformers Trainer (progress, checkpoints, resume).

No example is padded to the dataset's maximum: the collator pads each batch to its own longest
row, and length-grouped sampling keeps rows of similar length together.
"""
from __future__ import annotations

import json
import sys
import time
import zipfile
from pathlib import Path

import torch

from . import prompts
from .errors import HubError
from .generate import build_prompts
from .results import peak_memory_mb, reset_peak_memory
from .tracking import tracker_run


def tokenize_rows(rows: list[dict], tokenizer, family: str, style: str, kind: str, data_cfg,
                  label2id: dict[str, int] | None = None) -> list[dict]:
    """Model inputs per row; causal labels are -100 on the prompt so only the answer is learned."""
    texts = [r["input"] for r in rows]
    if family == "encoder":
        enc = tokenizer(texts, truncation=True, max_length=data_cfg.max_source_length)
        return [{"input_ids": ids, "attention_mask": am, "labels": label2id[r["target"]]}
                for ids, am, r in zip(enc["input_ids"], enc["attention_mask"], rows)]
    prompt_texts = build_prompts(tokenizer, style, kind, texts, data_cfg.max_source_length,
                                 prompts.for_run(data_cfg, tokenizer))
    enc = tokenizer(prompt_texts, truncation=True, max_length=data_cfg.max_source_length)
    targets = tokenizer([r["target"] for r in rows], add_special_tokens=family == "seq2seq",
                        truncation=True, max_length=data_cfg.max_target_length)["input_ids"]
    out = []
    for ids, target in zip(enc["input_ids"], targets):
        if family == "seq2seq":
            out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": target})
        else:
            answer = target + [tokenizer.eos_token_id]
            out.append({"input_ids": ids + answer, "attention_mask": [1] * (len(ids) + len(answer)),
                        "labels": [-100] * len(ids) + answer})
    return out


def real_tokens(features: list[dict]) -> int:
    """Non-pad tokens the model reads per epoch (encoder inputs plus decoder targets)."""
    n = sum(len(f["input_ids"]) for f in features)
    if features and isinstance(features[0]["labels"], list) and len(features[0]["labels"]) != len(
            features[0]["input_ids"]):
        n += sum(len(f["labels"]) for f in features)
    return n


def collator(tokenizer, family: str, model=None):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

    if family == "encoder":
        return DataCollatorWithPadding(tokenizer)
    return DataCollatorForSeq2Seq(tokenizer, model=model if family == "seq2seq" else None,
                                  label_pad_token_id=-100, padding=True)


def build_optimizer(model, train_cfg):
    """None lets the Trainer build AdamW; Prodigy (prodigyopt) adapts its own step size."""
    if train_cfg.optimizer == "adamw":
        return None
    if train_cfg.optimizer == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise HubError("optimizer 'prodigy' needs the package prodigyopt (pip install prodigyopt)") from None
        params = [p for p in model.parameters() if p.requires_grad]
        return Prodigy(params, lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay)
    raise HubError(f"unknown optimizer '{train_cfg.optimizer}'; allowed: adamw, prodigy")


def _damage(path: Path) -> str | None:
    """Why a checkpoint file cannot be loaded, or None. A safetensors file must hold every byte its
    header promises (8-byte length, JSON header, data); torch's .pt/.pth/.bin are zip archives whose
    CRCs must check out. A kill or a full disk during a save leaves a file short."""
    try:
        if path.suffix == ".safetensors":
            with open(path, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            return None if path.stat().st_size == 8 + n + end else f"{path.name} is truncated"
        if path.suffix in (".pt", ".pth", ".bin"):
            with zipfile.ZipFile(path) as z:
                return f"{path.name} is damaged" if z.testzip() else None
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return f"{path.name} is truncated or damaged"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why a checkpoint-N folder cannot be resumed from, or None: its trainer_state.json (the Trainer
    writes it after the weights, optimizer and RNG state) must parse and every weight/state file load."""
    try:
        json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "it has no readable trainer_state.json"
    return next((d for d in map(_damage, sorted(path.iterdir())) if d), None)


def last_complete_checkpoint(checkpoint_dir: Path, say=None) -> str | None:
    """The newest checkpoint-N that is complete; newer damaged ones are passed over (and named to
    `say`, e.g. sys.stderr), so a kill or a full disk during a save costs only that save."""
    found = sorted(((int(p.name.rsplit("-", 1)[1]), p) for p in Path(checkpoint_dir).glob("checkpoint-*")
                    if p.name.rsplit("-", 1)[1].isdigit()), reverse=True)
    for i, (_, path) in enumerate(found):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path)
        if say is not None:
            fallback = f"trying {found[i + 1][1].name}" if i + 1 < len(found) else "starting from step 0"
            print(f"warning: {path.name} cannot be resumed from ({problem}); {fallback}", file=say)
    return None


def _elapsed_callback(before: float):
    """A Trainer callback whose state (training seconds so far, resumes included) is saved inside
    every checkpoint's trainer_state.json, so a resumed run reports its whole training time."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class ElapsedTime(TrainerCallback, ExportableState):
        def __init__(self):
            self.start = time.perf_counter()

        def seconds(self) -> float:
            return before + time.perf_counter() - self.start

        def state(self) -> dict:
            return {"args": {}, "attributes": {"seconds": self.seconds()}}

    return ElapsedTime()


def _checkpoint_state(checkpoint: str | None) -> dict:
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text()) if checkpoint else {}


def selection_args(train_cfg, has_validation: bool) -> dict:
    """TrainingArguments for validation during training: with --eval_steps, the validation loss is
    evaluated every N steps, a checkpoint saved at each evaluation, and the best one (lowest
    eval_loss) loaded at the end, so it is the model that gets saved and tested."""
    if not has_validation or train_cfg.eval_steps is None:
        return {"eval_strategy": "no"}
    return {"eval_strategy": "steps", "eval_steps": train_cfg.eval_steps, "save_steps": train_cfg.eval_steps,
            "load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False,
            "per_device_eval_batch_size": train_cfg.batch_size}


def make_trainer(model, tokenizer, features: list[dict], family: str, cfg, checkpoint_dir: Path,
                 eval_features: list[dict] | None = None):
    """The Trainer of a run. Precision: with a bf16 compute dtype (GPUs, CPUs where native bf16 is faster)
    the forward and backward run under bf16 autocast while trainable weights, gradients and the
    optimizer state stay fp32 (methods.wrap); the loss is taken in fp32 at label positions only."""
    from datasets import Dataset
    from transformers import EarlyStoppingCallback, TrainingArguments

    from .lm_loss import trainer_class
    from .models import resolve_dtype
    from .tracking import tracking

    t = cfg.train
    quantized = getattr(model, "is_loaded_in_4bit", False) or cfg.method.method == "qlora"
    optim = "paged_adamw_32bit" if quantized and torch.cuda.is_available() else "adamw_torch"
    checkpointing = t.gradient_checkpointing if t.gradient_checkpointing is not None else quantized
    report_to, trackers = tracking(t.report_to, Path(checkpoint_dir).parent)
    saving = {"save_strategy": "steps", "save_steps": t.save_steps, "save_total_limit": 2,
              "label_names": ["labels"], "prediction_loss_only": True,
              **selection_args(t, bool(eval_features))}
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm, optim=optim,
        seed=t.seed, data_seed=t.seed,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        logging_steps=t.logging_steps, **saving,
        report_to=report_to, remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=resolve_dtype(cfg.model.torch_dtype) == torch.bfloat16,
        # Non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen).
        activation_checkpointing=checkpointing, activation_checkpointing_kwargs={"use_reentrant": False},
    )
    if checkpointing:  # also for callers that take single steps without Trainer.train()
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    patience = [EarlyStoppingCallback(t.early_stopping_patience)] if t.early_stopping_patience and eval_features else []
    trainer = trainer_class()(model=model, args=args, train_dataset=Dataset.from_list(features),
                              eval_dataset=Dataset.from_list(eval_features) if eval_features else None,
                              data_collator=collator(tokenizer, family, model), processing_class=tokenizer,
                              optimizers=(build_optimizer(model, t), None), callbacks=patience + trackers)
    # Unset, a bf16 run without whole-layer checkpointing recomputes its norms and gated-MLP
    # products (lm_loss.elementwise_recomputed: Gemma-3-270M's step at 8 x 384 tokens peaks 2,914
    # instead of 3,597 MiB, benchmarks/README.md); `false` recomputes nothing.
    trainer.recompute_elementwise = t.gradient_checkpointing is None and not checkpointing and args.bf16
    refuse_zero3(trainer)
    return trainer


def refuse_zero3(trainer) -> None:
    """DeepSpeed ZeRO-3 shards the weights themselves: rank 0 alone would save and evaluate a model
    whose parameters live on all ranks (it saved empty adapter tensors, then its generation waited
    for ranks that had returned). Refused before training until that is gathered."""
    plugin = trainer.accelerator.state.deepspeed_plugin if trainer.is_deepspeed_enabled else None
    if plugin is not None and plugin.zero_stage == 3:
        raise HubError("DeepSpeed ZeRO-3 is not supported: rank 0 saves and evaluates the model alone and would "
                       "need the weights gathered from every rank; use configs/accelerate/deepspeed_zero2.yaml "
                       "(or fsdp.yaml on GPUs)")


def adapter_input_casting(trainer):
    """peft's cast of adapter inputs off while this Trainer runs under bf16 autocast on the CPU
    (methods.adapter_input_casting)."""
    from .methods import adapter_input_casting as casting

    return casting(trainer.model, trainer.args.bf16 and not torch.cuda.is_available())


def validation_record(trainer, n_examples: int) -> dict | None:
    """Validation loss of the model as it will be saved (the best checkpoint when --eval_steps
    selected one), the eval-loss history and the step that was kept."""
    if trainer.eval_dataset is None:
        return None
    history = [{"step": e["step"], "eval_loss": e["eval_loss"]} for e in trainer.state.log_history if "eval_loss" in e]
    best = trainer.state.best_model_checkpoint
    step = int(best.rsplit("-", 1)[1]) if best else None
    # The kept checkpoint was evaluated when it was saved: its loss is in the history (a 1.5B model
    # spends ~100 s per pass over 100 SAMSum validation dialogues); otherwise evaluate once now.
    # Without --eval_steps this final pass is all validation costs, outside the training time: by
    # default over the whole split (SAMSum: 818 dialogues, ~5 min for the 1.5B on 2 cores), so say so.
    known = [e["eval_loss"] for e in history if e["step"] == step]
    start = time.perf_counter()
    if not known:
        print(f"validation loss of the trained model on {n_examples} examples "
              "(--validation_samples N scores fewer)", file=sys.stderr, flush=True)
    loss = known[-1] if known else trainer.evaluate()["eval_loss"]
    return {"loss": loss, "examples": n_examples, "history": history,
            "best_step": step, "seconds": time.perf_counter() - start,
            "selected_by": "eval_loss" if best else None}


def fit(model, tokenizer, features: list[dict], family: str, cfg, checkpoint_dir: Path,
        resume: bool, eval_features: list[dict] | None = None) -> dict:
    """Train; return wall seconds, steps, real tokens per second, peak memory and validation loss."""
    t = cfg.train
    reset_peak_memory()  # the loaded model counts, an earlier run of the same process does not
    trainer = make_trainer(model, tokenizer, features, family, cfg, checkpoint_dir, eval_features)
    last = last_complete_checkpoint(checkpoint_dir, say=sys.stderr) if resume else None
    state = _checkpoint_state(last)
    before = state.get("stateful_callbacks", {}).get("ElapsedTime", {}).get("attributes", {}).get("seconds", 0.0)
    elapsed = _elapsed_callback(before)
    trainer.add_callback(elapsed)
    with adapter_input_casting(trainer), tracker_run(t.report_to, Path(checkpoint_dir).parent, trainer.args.process_index == 0):
        if last and state.get("max_steps", 0) > 0 and state["global_step"] >= state["max_steps"]:
            # Killed after training's final checkpoint: take its weights; training again would run
            # one step past max_steps.
            from transformers import TrainerState

            trainer.state = TrainerState.load_from_json(str(Path(last) / "trainer_state.json"))
            best = trainer.state.best_model_checkpoint if trainer.args.load_best_model_at_end else None
            trainer._load_from_checkpoint(best if best and Path(best).is_dir() else last)
            steps, train_loss = trainer.state.global_step, None
        else:
            output = trainer.train(resume_from_checkpoint=last)
            steps, train_loss = output.global_step, output.training_loss
        seconds = elapsed.seconds()
        validation = validation_record(trainer, len(eval_features or []))
    main_process, world_size = trainer.args.process_index == 0, trainer.args.world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # The ranks leave the process group together, here: otherwise a rank that exits while rank 0
        # still evaluates tears gloo's worker threads down at interpreter exit, and aborts (SIGABRT).
        # The barrier first: no rank shuts its connections while another is still in a collective.
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    examples_seen = steps * t.batch_size * t.grad_accum * world_size
    tokens = real_tokens(features) * examples_seen / len(features)
    return {"seconds": seconds, "steps": steps, "train_loss": train_loss,
            "examples": len(features), "real_tokens": int(tokens),
            "tokens_per_second": tokens / seconds if seconds else None,
            "peak_memory_mb": peak_memory_mb(), "resumed_from": last,
            "loss_log": [e for e in trainer.state.log_history if "loss" in e], "validation": validation,
            "is_main_process": main_process}
