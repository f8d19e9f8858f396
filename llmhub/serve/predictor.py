"""The one predictor behind every server (FastAPI, Ray Serve) and the inference-script equivalence.

A `Predictor` holds a loaded model and the exact prompt rules of the experiment it came from, so a
served answer equals the one `llmhub evaluate` writes to predictions.jsonl for the same input:
- `render(texts)` applies the experiment's prompt format (template, chat or plain) and shortens each input to fit
  `max_source_length`, as `experiment.predict` does in mode "finetune";
- `complete(prompts, max_new_tokens)` runs batched greedy decoding (or the encoder's arg-max) on
  already-rendered prompts, grouping prompts that ask for different `max_new_tokens`;
- `predict(texts)` = render + complete, returning {"prediction", "label"} per input.

Generative classifiers return the generated text in "prediction" and, when the experiment saved its
label set, the label that text names (`metrics.match_label`, None when it names none) in "label".
Encoder classifiers return the arg-max label in both fields. Summaries have "label": None.

Sources: an experiment directory (base + adapter, or a fully fine-tuned model), or a plain model
folder / registry name with a task (e.g. the base SmolLM2-135M with the fine-tune template, or a
folder written by `inference/merge.py`, whose `llmhub.yaml` carries the experiment's config).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import data as data_mod
from .. import generate, models, prompts
from ..adapters import MERGED_CONFIG
from ..config import RunConfig
from ..errors import HubError
from ..experiment import load_trained
from ..resolve import resolve
from ..rundir import trained_labels



@dataclass
class Predictor:
    model: object
    tokenizer: object
    family: str  # seq2seq | causal | encoder
    style: str  # prompt style of the family
    kind: str  # classification | generation
    labels: list[str]
    max_source_length: int  # tokens of template + input, as in training
    max_new_tokens: int  # default generation budget per request
    batch_size: int  # most prompts per forward pass
    name: str = ""
    prompt: prompts.PromptFormat = prompts.PromptFormat()  # the run's template and chat setting

    # ----- loading -----------------------------------------------------------------------------
    @classmethod
    def from_experiment(cls, exp_dir: str | Path, overrides: dict | None = None, weights: bool = True) -> "Predictor":
        """Base + adapter (or the full model) of a finished experiment, with its prompt rules;
        weights=False: the rules and tokenizer only (another process, e.g. vLLM, holds the model)."""

        exp_dir = Path(exp_dir)
        if not (exp_dir / "config.yaml").is_file():
            raise HubError(f"{exp_dir} is not an experiment directory (no config.yaml)")
        cfg = resolve(config_file=exp_dir / "config.yaml", layers=[("", overrides or {})])
        family = models.family_of(models.load_config(cfg.model.pretrained_ckpt), cfg.model.family)
        if weights:
            tok, model = load_trained(exp_dir, cfg, family)
        else:
            tok, model = models.load_tokenizer(str(exp_dir / "model"), family), None
        return cls.build(model, tok, family, cfg, trained_labels(exp_dir / "model"), name=str(exp_dir))

    @classmethod
    def from_model(cls, name: str, overrides: dict | None = None, weights: bool = True) -> "Predictor":
        """A plain model folder, registry name or merged model; the task comes from `overrides`
        (e.g. {"task": "summarization"}) or from the folder's llmhub.yaml."""
        path = Path(models.resolve_path(name))
        merged = path / MERGED_CONFIG
        cfg = resolve(config_file=merged if merged.is_file() else None, layers=[("", overrides or {})])
        cfg.model.pretrained_ckpt = str(path)
        family = models.family_of(models.load_config(str(path)), cfg.model.family)
        labels = trained_labels(path)
        tok = models.load_tokenizer(str(path), family)
        model = None if not weights else models.load_base_model(str(path), family, models.resolve_dtype(cfg.model.torch_dtype),
                                       num_labels=len(labels) or None, label_names=labels or None)
        return cls.build(model, tok, family, cfg, labels, name=name)

    @classmethod
    def load(cls, experiment_dir: str | None = None, model: str | None = None,
             overrides: dict | None = None, weights: bool = True) -> "Predictor":
        """Exactly one of experiment_dir / model."""
        if bool(experiment_dir) == bool(model):
            raise HubError("give exactly one of --experiment_dir (a trained experiment) or --model "
                           "(a model folder or registry name, with --task)")
        if experiment_dir:
            return cls.from_experiment(experiment_dir, overrides, weights)
        return cls.from_model(model, overrides, weights)

    @classmethod
    def build(cls, model, tok, family: str, cfg: RunConfig, labels: list[str], name: str) -> "Predictor":
        """A Predictor of a loaded model with the run's prompt rules (template, format, budgets)."""
        spec = data_mod.task_spec(cfg.data)
        if family == "encoder" and spec.kind != "classification":
            raise HubError(f"encoder model '{name}' only does classification, not task '{cfg.data.task}'")
        if family == "encoder" and model is not None and not getattr(model.config, "id2label", None):
            raise HubError(f"encoder model '{name}' has no label names (labels.json or config id2label)")
        if model is not None:
            model.eval()
        return cls(model, tok, family, models.PROMPT_STYLE[family], spec.kind, labels,
                   cfg.data.max_source_length, cfg.eval.max_new_tokens or spec.max_new_tokens,
                   cfg.eval.eval_batch_size, name,
                   prompts.for_run(cfg.data, tok) if family != "encoder" else prompts.PromptFormat())

    # ----- prediction --------------------------------------------------------------------------
    def render(self, texts: list[str], tokenizer=None) -> list[str]:
        """The prompts evaluation builds for raw inputs (encoders see the raw text). A server passes
        its own copy of the tokenizer: a fast tokenizer must not be shared across threads."""
        if self.family == "encoder":
            return list(texts)
        return generate.build_prompts(tokenizer or self.tokenizer, self.style, self.kind, list(texts),
                                      self.max_source_length, self.prompt)

    def complete(self, prompts: list[str], max_new_tokens: int | list[int] | None = None,
                 adapters: list[str] | None = None) -> list[str]:
        """Greedy completions (or encoder labels) of rendered prompts, in input order. Prompts
        asking for different budgets run as separate batches, since one `generate` call has one.
        `adapters`: the peft adapter of each prompt (a mixed-adapter batch), default the active one."""
        if self.family == "encoder":
            return generate.classify(self.model, self.tokenizer, prompts, max(len(prompts), 1),
                                     self.max_source_length, progress=False)
        budgets = max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * len(prompts)
        budgets = [b or self.max_new_tokens for b in budgets]
        out = [""] * len(prompts)
        for budget in sorted(set(budgets)):
            idx = [i for i, b in enumerate(budgets) if b == budget]
            texts = generate.generate(self.model, self.tokenizer, [prompts[i] for i in idx], self.family,
                                      budget, max(len(idx), 1), self.max_source_length, progress=False,
                                      adapter_names=[adapters[i] for i in idx] if adapters else None)
            for i, text in zip(idx, texts):
                out[i] = text
        return out

    def answer(self, completion: str) -> dict:
        """The response fields of one completion."""
        if self.kind != "classification":
            return {"prediction": completion, "label": None}
        if self.family == "encoder":
            return {"prediction": completion, "label": completion}
        from ..metrics import match_label

        return {"prediction": completion, "label": match_label(completion, self.labels) if self.labels else None}

    def predict(self, texts: list[str], max_new_tokens: int | list[int] | None = None) -> list[dict]:
        """Template + batched greedy prediction of raw inputs: [{"prediction", "label"}, ...]."""
        return [self.answer(c) for c in self.complete(self.render(texts), max_new_tokens)]

    def describe(self) -> dict:
        return {"model": self.name, "family": self.family, "task_kind": self.kind,
                "max_source_length": self.max_source_length, "max_new_tokens": self.max_new_tokens,
                "labels": len(self.labels)}


