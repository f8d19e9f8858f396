"""Per-model-folder recipes: `llmhub/config_hub/<folder>/recipe.yaml`, loaded and checked here.

The recipes are package data, so an installed llmhub finds them from any working directory; the
model folders of a checkout (`<folder>/*.py`, `<folder>/grids/`) start from the recipe of their name.

A recipe file holds plain config overrides (nested by section, the same keys as a run's config.yaml):

    task: classification   # optional: the folder's task when no flag, file or grid names one
    base: {...}            # every run of the folder
    tasks:                 # one row per task, applied on top of base for the run's *final* task
      classification: {...}
      summarization: {...}
    baseline: {...}        # optional: zero-/few-shot baselines on top (e.g. an Instruct checkpoint)

The order in which a run is resolved (recipe, config file, flags, --set) is llmhub/resolve.py's.
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path

from .config import flatten, load_yaml
from .errors import HubError

HUB = Path(__file__).resolve().parent / "config_hub"  # installed with the package (pyproject package-data)
FOLDERS = tuple(sorted(p.parent.name for p in HUB.glob("*/recipe.yaml")))  # the model folders with a recipe
FILE_KEYS = ("task", "base", "tasks", "baseline")
# Tasks without a row of their own use the row of the task of the same kind.
TASK_ALIASES = {"dialogsum": "summarization", "custom": "summarization"}


def recipe_path(model: str) -> Path:
    return HUB / model / "recipe.yaml"


def merge(base: dict, over: dict) -> dict:
    """Deep merge: nested sections combine key by key, `over` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _checked(value, where: str) -> dict:
    """A mapping of config overrides whose every key is a config key (types are checked on use)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HubError(f"{where}: expected a mapping of config keys, got {value!r}")
    try:
        flatten(value)
    except HubError as e:
        raise HubError(f"{where}: {e}") from None
    return value


@functools.lru_cache(maxsize=None)
def load_recipe(model: str) -> dict:
    """The folder's recipe file, checked: {'task': str | None, 'base', 'tasks', 'baseline'}."""
    if model not in FOLDERS:
        raise HubError(f"unknown model folder '{model}'; allowed: {', '.join(FOLDERS)}")
    path = recipe_path(model)
    spec = load_yaml(path)
    unknown = sorted(set(spec) - set(FILE_KEYS))
    if unknown:
        raise HubError(f"{path}: unknown recipe key(s) {', '.join(unknown)}; allowed: {', '.join(FILE_KEYS)}")
    tasks = spec.get("tasks") or {}
    if not isinstance(tasks, dict):
        raise HubError(f"{path}: 'tasks' must map task names to config overrides")
    return {"task": spec.get("task"), "base": _checked(spec.get("base"), f"{path}: base"),
            "tasks": {t: _checked(v, f"{path}: tasks.{t}") for t, v in tasks.items()},
            "baseline": _checked(spec.get("baseline"), f"{path}: baseline")}


def default_task(model: str | None) -> str | None:
    """The task a folder's runs have when nothing names one (None: the config's default)."""
    return load_recipe(model)["task"] if model else None


def defaults(model: str, task: str, action: str = "train") -> dict:
    """The overrides a model folder applies for a run of `task` (its final task), before any flag."""
    recipe = load_recipe(model)
    row = recipe["tasks"].get(task, recipe["tasks"].get(TASK_ALIASES.get(task, ""), {}))
    out = merge(merge(recipe["base"], row), {"data": {"task": task}})
    if action == "baseline":
        out = merge(out, recipe["baseline"])
    return copy.deepcopy(out)  # callers may change it; the cached recipe stays as read


def baseline_defaults(model: str, task: str) -> dict:
    """defaults() plus the folder's `baseline` row (e.g. RedPajama's Instruct checkpoint)."""
    return defaults(model, task, "baseline")
