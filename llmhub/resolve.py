"""The one order in which a run's config is resolved; every entry point calls `resolve`.

    config defaults (llmhub/config.py)
 -> the model folder's recipe (llmhub/config_hub/<folder>/recipe.yaml) for the run's *final* task
 -> a config file (--config, or an experiment's config.yaml)
 -> flags (--lora_r 16; a grid's base, then its cell)
 -> --set KEY=VALUE

The final task is the last layer that names one, else the entry point's own task (a script's name, a
grid's `task:`), else the recipe's, else the config default. Resolving the recipe for that task,
not for whatever task a script was named after, is what makes
`llama2/llama2_summarization.py --task classification`, `llmhub train --model llama2 --task
classification` and `llmhub train --model llama2 --set task=classification` the same run.
"""
from __future__ import annotations

import yaml

from . import recipes
from .config import RunConfig, apply_overrides, flatten, load_yaml
from .errors import HubError


def parse_sets(items: list[str] | None, flag: str = "--set") -> dict:
    """['k=v', ...] -> {k: YAML value}; the one KEY=VALUE parser."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise HubError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _where(where: str, e: HubError) -> HubError:
    return HubError(f"{where}: {e}" if where else str(e))


def _flat(layer: dict | None, where: str) -> dict:
    try:
        return flatten(layer or {})
    except HubError as e:
        raise _where(where, e) from None


def final_task(model: str | None, task: str | None, layers: list[tuple[str, dict]]) -> str:
    """The task the run will have once every layer is applied."""
    for _, layer in reversed(layers):
        if layer.get("task"):
            return str(layer["task"])
    return task or recipes.default_task(model) or RunConfig().data.task


def resolve(model: str | None = None, task: str | None = None, *, config_file=None,
            layers: list[tuple[str, dict]] | None = None, action: str = "train",
            extra=None) -> RunConfig:
    """One run's config: defaults -> recipe(model, final task) -> config file -> layers, in order.

    `layers` are (where, overrides) pairs, lowest first; an error in a layer is prefixed by its
    `where` (a file, 'base', a grid cell; '' for flags, which name themselves).
    `extra(task)` may add defaults that depend on the final task (a baseline's output folder); they
    sit just above the recipe. Raises HubError naming the layer that holds a bad key or value.
    """
    ordered = []
    if config_file:
        ordered.append((str(config_file), load_yaml(config_file)))
    ordered += list(layers or [])
    ordered = [(where, _flat(over, where)) for where, over in ordered]
    chosen = final_task(model, task, ordered)
    cfg = RunConfig()
    if model:
        cfg = apply_overrides(cfg, recipes.defaults(model, chosen, action))
    cfg = apply_overrides(cfg, {"task": chosen, **(extra(chosen) if extra else {})})
    for where, over in ordered:
        try:
            cfg = apply_overrides(cfg, over)
        except HubError as e:
            raise _where(where, e) from None
    return cfg


def from_args(args, model: str | None = None, task: str | None = None, action: str = "train",
              extra=None) -> RunConfig:
    """resolve() for parsed command-line args: --config, then the config-key flags, then --set."""
    flags = {k[5:]: v for k, v in vars(args).items() if k.startswith("cfg__")}
    return resolve(model, task, config_file=getattr(args, "config", None), action=action, extra=extra,
                   layers=[("", flags), ("", parse_sets(getattr(args, "set", None)))])
