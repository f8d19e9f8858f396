"""The model names one server answers to: a base model and the LoRA adapters trained on it.

Each name (a request's "model") is a `Route`: the prompt rules of the experiment it came from (a
`Predictor`: template, labels, budgets) and the adapter that decodes it. Names follow
`inference/vllm/launch.py`, so the same name means the same thing on our server and on vLLM:
an experiment answers as its folder's name, its base model as the base folder's name, and an
extra adapter (`--adapter name=EXP_DIR`) as `name`.

All adapters share one base model in memory (peft's `load_adapter`); a batch may mix them
(`adapter_names=` per row, "__base__" for the base).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import models
from ..config import load_yaml
from ..errors import HubError
from ..resolve import resolve
from ..rundir import trained_labels
from .decoding import BASE_ADAPTER
from .predictor import Predictor

PRIMARY_ADAPTER = "default"  # peft's name for the adapter PeftModel.from_pretrained loads


@dataclass(frozen=True)
class Route:
    name: str  # what clients send as "model"
    predictor: Predictor  # prompt rules of this name (its experiment's template, labels, budgets)
    adapter: str  # peft adapter name, BASE_ADAPTER for the base model
    parent: str | None = None  # the base's name, for adapters


@dataclass
class Catalog:
    routes: dict[str, Route] = field(default_factory=dict)
    default: str = ""  # the name a request without "model" gets

    def get(self, name: str | None) -> Route:
        route = self.routes.get(name or self.default)
        if route is None:
            raise KeyError(f"unknown model '{name}'; allowed: {', '.join(self.routes)}")
        return route

    def add(self, route: Route) -> None:
        if route.name in self.routes:
            raise HubError(f"model name '{route.name}' is given twice; names must be unique")
        self.routes[route.name] = route


def base_of(exp_dir: Path) -> str | None:
    """The base model folder an adapter experiment was trained on (None: not an adapter)."""
    adapter_cfg = exp_dir / "model" / "adapter_config.json"
    if not adapter_cfg.is_file():
        return None
    base = load_yaml(exp_dir / "config.yaml").get("model", {}).get("pretrained_ckpt")
    base = base or json.loads(adapter_cfg.read_text()).get("base_model_name_or_path")
    return str(Path(models.resolve_path(base)).resolve())


def parse_adapter(spec: str) -> tuple[str, Path]:
    """"name=EXP_DIR" -> (name, path)."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise HubError(f"--adapter '{spec}': expected NAME=EXPERIMENT_DIR")
    if name == BASE_ADAPTER or name == PRIMARY_ADAPTER:
        raise HubError(f"--adapter '{spec}': the name '{name}' is reserved")
    return name, Path(path)


def build(primary: Predictor, experiment_dir: str | None, model: str | None, adapters: list[str],
          overrides: dict, weights: bool = True) -> Catalog:
    """Routes for the primary source (already loaded) and every `--adapter name=EXP_DIR`, whose
    adapter weights join the primary's base model when `weights` (the local engine)."""
    cat = Catalog()
    if experiment_dir:
        exp = Path(experiment_dir).resolve()
        base = base_of(exp)
        cat.add(Route(exp.name, primary, PRIMARY_ADAPTER if base else BASE_ADAPTER,
                      Path(base).name if base else None))
        if base:
            cat.add(Route(Path(base).name, primary, BASE_ADAPTER))
    else:
        base = str(Path(models.resolve_path(model)).resolve())
        cat.add(Route(Path(base).name, primary, BASE_ADAPTER))
    cat.default = next(iter(cat.routes))
    for spec in adapters:
        name, exp = parse_adapter(spec)
        if name in cat.routes:
            raise HubError(f"--adapter {spec}: model name '{name}' is given twice; names must be unique")
        if not (exp / "config.yaml").is_file():
            raise HubError(f"--adapter {spec}: {exp} is not an experiment directory (no config.yaml)")
        its_base = base_of(exp)
        if its_base is None:
            raise HubError(f"--adapter {spec}: {exp / 'model'} holds no adapter (adapter_config.json)")
        if base is None or its_base != base:
            raise HubError(f"--adapter {spec}: trained on {its_base}, but the server's base model is "
                           f"{base or 'a fully fine-tuned model'}; adapters must share the served base")
        cfg = resolve(config_file=exp / "config.yaml", layers=[("", overrides)])
        if weights:
            primary.model = attach(primary.model, exp / "model", name)
        rules = Predictor.build(primary.model, primary.tokenizer, primary.family, cfg,
                                 trained_labels(exp / "model"), name=str(exp))
        cat.add(Route(name, rules, name, Path(base).name))
    return cat


def attach(model, adapter_dir: Path, name: str):
    """`model` with one more LoRA adapter; a plain base model becomes a peft model first."""
    if hasattr(model, "peft_config"):
        model.load_adapter(str(adapter_dir), adapter_name=name)
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name).eval()
