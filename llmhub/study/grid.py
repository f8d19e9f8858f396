"""Grid files: a grid of config overrides written as data -> fully resolved, validated runs.

A grid file (YAML):

    model: flan-t5              # model folder: its recipe (llmhub/config_hub/<folder>/recipe.yaml) is the start
    task: classification        # default task (a grid axis or base may set `task` too)
    action: train               # train | baseline (zero-/few-shot, llmhub/baseline.py)
    name: "r{lora_r}_d{lora_dropout}_e{epochs}"   # run folder name; {any config key} or {axis}
    base: {epochs: 5}           # overrides shared by every run (nested, dotted or flat keys)
    grid:                       # cartesian product of the listed values
      lora_r: [2, 4, 8, 16]
      lora_dropout: [0.1, 0.2]
    runs:                       # optional explicit runs, added after the grid product
      - {name: full, method: full, learning_rate: 2.0e-5}
    study: {kind: ablation, varied: [lora_r, lora_dropout], reference: r8_d0.1_e5}   # what the runs compare
                                # (STUDY_KINDS); reference: the run p-values are taken against
    search:                     # optional: each training run takes `key` from a screening stage
      key: learning_rate
      values: {lora: [1.0e-4, 3.0e-4, 1.0e-3], ia3: [1.0e-3, 3.0e-3, 1.0e-2]}   # per method, or one list
      screen: {max_steps: 30, eval_steps: 30}   # each candidate's short run (validation loss only)
      group: "{pretrained_ckpt}_{method}"       # runs with one group name share their screening
      extend: {lora: [3.0e-3], ia3: [3.0e-2]}   # optional: larger values, screened while the largest wins
      finalists: 2                              # optional: a second rung, the 2 best screened trained in full

A search is successive halving (one rung, or two with `finalists`): every candidate trains `screen`
steps into <output_root>/screen/<group>_<key>-<value>/ (validation loss only, no test split), the
losers stop there, and the run itself trains in full with the value of lowest validation loss (with
one rung; with two, see `finalists` below). Screening runs are
ordinary resumable runs, so a killed sweep resumes inside its search too. A run that sets the key
itself (`runs: [{name: full, method: full, learning_rate: 1.0e-4}]`) keeps its value, unscreened.
When the largest value screened wins, the range may have stopped short of the best; `extend` lists
values above the range, screened one at a time, in order, for as long as the largest screened so far
has the lowest validation loss (so a range whose top loses costs no extra screen).

Short screens favour large values (a learning rate that is best over 30 steps may lose over 125), so
`finalists: K` (default 1) adds a second rung: the K values of lowest screening loss are trained in
full, on the recipe of the group's first training run (its *lead*), validation loss only, into
<output_root>/screen/<group>_<key>-<value>_full/, and the value of lowest full-length validation loss
is chosen. The lead itself trains first, with the screens' winner, and is that value's full-length
run (so the second rung costs K - 1 full runs without a test evaluation); a finished lead counts for
the value it trained with. When another finalist wins, the sweep says the lead should be retrained.

The sweep copies `study` into sweep.json beside the runs; the report reads it there to decide which
table a run belongs to (llmhub/study/records.py).

Each run's config = llmhub/resolve.py's order: defaults -> recipe(model, final task) -> base -> grid
cell / run -> `--set`; leaf names are unique in the config, so merging flat dicts is a merge at every
depth. Every run is
validated before anything runs (llmhub/study/sweep.py then runs them).
"""
from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import SECTIONS, RunConfig, apply_overrides, flatten, leaf_fields, load_yaml
from ..errors import HubError
from ..resolve import parse_sets, resolve

FILE_KEYS = ("model", "task", "action", "name", "base", "grid", "runs", "description", "study", "search")
SEARCH_KEYS = ("key", "values", "screen", "group", "extend", "finalists")
# sample_efficiency: a metric against training-set size (and model); ablation: hyperparameters of one
# method; comparison: prompting vs fine-tuning or any other side-by-side of whole setups; models: the
# same setups on several models, seeds pooled per (model, setup) (llmhub/model_study.py).
STUDY_KINDS = ("sample_efficiency", "ablation", "comparison", "models")
ACTIONS = ("train", "baseline")
# Keys of a run that are not config keys: the run's folder name and what to do with it.
RESERVED = ("name", "action", "mode")


@dataclass
class Run:
    """One resolved run: where it goes, what it does, and its full config."""
    name: str
    action: str
    config: dict
    args: dict = field(default_factory=dict)  # action arguments, e.g. {"mode": "few-shot"}
    overrides: dict = field(default_factory=dict)  # what this run changes (for listings)
    search_key: str | None = None  # the config key its screening runs choose
    screens: list[Run] = field(default_factory=list)  # one screening run per candidate value
    reserve: list[Run] = field(default_factory=list)  # screened in order while the largest screened value wins
    finalists: int = 1  # how many of the best screened values the second rung trains in full (1: no second rung)
    finals: dict = field(default_factory=dict)  # value -> its full-length screening run (the second rung)
    lead: Path | None = None  # the group's first training run: its full-length run for the value it trained with

    @property
    def out_dir(self) -> Path:
        return Path(self.config["output_dir"])

    def status(self) -> str:
        """done (skipped) | failed (retried) | partial (resumed) | pending."""
        from ..results import finished_record

        if finished_record(self.out_dir / "results.json") is not None:  # a corrupt one is redone
            return "done"
        if (self.out_dir / "error.json").exists():
            return "failed"
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()):
            return "partial"
        return "pending"


def load_grid(path: str | Path) -> dict:
    """Read a grid file and check its top-level keys."""
    spec = load_yaml(path)
    unknown = sorted(set(spec) - set(FILE_KEYS))
    if unknown:
        raise HubError(f"{path}: unknown grid file key(s) {', '.join(unknown)}; allowed: {', '.join(FILE_KEYS)}")
    if "study" in spec:
        check_study(spec["study"], f"{path}: study")
    return spec


def check_study(study, where: str) -> dict:
    """A study declaration: {kind: one of STUDY_KINDS, varied: [config keys or run keys],
    reference: the run name others are tested against (optional; default the report's first row)}."""
    if not isinstance(study, dict) or set(study) - {"kind", "varied", "reference"}:
        raise HubError(f"{where}: expected {{kind: ..., varied: [keys], reference: run name}}, got {study!r}")
    if "reference" in study and not isinstance(study["reference"], str):
        raise HubError(f"{where}: 'reference' must be a run name, got {study['reference']!r}")
    if study.get("kind") not in STUDY_KINDS:
        raise HubError(f"{where}: unknown kind {study.get('kind')!r}; allowed: {', '.join(STUDY_KINDS)}")
    varied = study.get("varied") or []
    leaves = leaf_fields()
    bad = [k for k in varied if not isinstance(k, str) or (k.split(".")[-1] not in leaves and k not in RESERVED)]
    if not isinstance(varied, list) or bad:
        raise HubError(f"{where}: 'varied' must list config keys or {', '.join(RESERVED)}; bad: {bad or varied!r}")
    return study


def parse_axes(items: list[str]) -> dict:
    """['lora_r=2,4', 'task=[summarization]'] -> {'lora_r': [2, 4], 'task': ['summarization']}."""
    out = {}
    for k, v in parse_sets(items, "--grid").items():
        out[k] = v if isinstance(v, list) else yaml.safe_load(f"[{v}]") if isinstance(v, str) else [v]
    return out


def _split(over: dict, where: str) -> tuple[dict, dict]:
    """Separate the reserved run keys (name, action, mode) from config overrides."""
    if not isinstance(over, dict):
        raise HubError(f"{where}: expected a mapping of config keys, got {over!r}")
    args = {k: v for k, v in over.items() if k in RESERVED}
    return args, {k: v for k, v in over.items() if k not in RESERVED}


def _flat(over: dict, where: str) -> dict:
    """Flatten and type-check one layer of overrides; errors say where the layer came from."""
    try:
        flat = flatten(over)
        apply_overrides(RunConfig(), flat)
    except HubError as e:
        raise HubError(f"{where}: {e}") from None
    return flat


def _axis_layer(key: str, value) -> dict:
    """A grid value is a scalar for `key`, or a dict of overrides applied together (a zipped axis)."""
    if isinstance(value, dict):
        return {key: value} if key in SECTIONS else value
    return {key: value}


def _cells(spec: dict, src: str, axes_over: dict) -> list[tuple[dict, dict, dict]]:
    """(labels, reserved args, flat overrides) per grid cell and explicit run."""
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise HubError(f"{src}: 'grid' must map config keys to lists of values")
    for key, values in axes_over.items():  # --grid replaces an axis in place (matched by leaf) or adds one
        leaf = key.split(".")[-1]
        same = [k for k in grid if k.split(".")[-1] == leaf]
        grid = {(key if k in same else k): (values if k in same else v) for k, v in grid.items()}
        grid.setdefault(key, values)
    for key, values in grid.items():
        if not isinstance(values, list):
            raise HubError(f"{src}: grid key '{key}' must be a list of values, got {values!r}")
        if not values:
            raise HubError(f"{src}: grid key '{key}' has no values")
    cells = []
    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)) if keys else []:
        labels, args, flat = {}, {}, {}
        for key, value in zip(keys, combo):
            where = f"{src}: grid key '{key}' value {value!r}"
            a, over = _split(_axis_layer(key, value), where)
            args.update(a)
            flat.update(_flat(over, where))
            if not isinstance(value, dict):
                labels[key.split(".")[-1]] = value
        cells.append((labels, args, flat))
    runs = spec.get("runs") or []
    if not isinstance(runs, list):
        raise HubError(f"{src}: 'runs' must be a list of override mappings")
    for i, run in enumerate(runs):
        a, over = _split(run, f"{src}: runs[{i}]")
        cells.append(({}, a, _flat(over, f"{src}: runs[{i}]")))
    if not cells:
        raise HubError(f"{src}: empty grid: give 'grid' axes with values or a list of 'runs'")
    return cells


def _name(template: str | None, labels: dict, cfg: RunConfig, args: dict, index: int) -> str:
    """The run's folder name: explicit name, else the template, else the varying axes."""
    if args.get("name"):
        raw = str(args["name"])
    elif template:
        fields = {k: v for section in SECTIONS for k, v in vars(getattr(cfg, section)).items()}
        fields.update(labels, action=args.get("action", ""), mode=args.get("mode", ""))
        fields["pretrained_ckpt"] = Path(str(cfg.model.pretrained_ckpt)).name  # a path's last part
        try:
            raw = template.format(**fields)
        except KeyError as e:
            raise HubError(f"run name template {template!r}: '{e.args[0]}' is not a config key or grid axis") from None
        except (IndexError, ValueError) as e:
            raise HubError(f"run name template {template!r}: {e}") from None
    elif labels:
        raw = "_".join(f"{k}-{Path(str(v)).name}" for k, v in labels.items())
    else:
        raw = f"run{index:02d}"
    name = re.sub(r"[^A-Za-z0-9._=+-]+", "-", raw).strip("-") or f"run{index:02d}"
    if set(name) == {"."}:  # '.' or '..' would put the run in output_root or its parent
        raise HubError(f"run name {raw!r} is not a plain folder name")
    return name


def checkout_of(grid_path: str | Path) -> Path | None:
    """The folder holding the model folders, for a grid shipped as <that>/<model folder>/grids/<grid>.yaml;
    None for a grid file elsewhere. Found from the grid file, never from where the package is installed."""
    path = Path(grid_path).resolve()
    return path.parents[2] if path.parent.name == "grids" and len(path.parents) > 2 else None


def default_output_root(grid_path: str | Path, spec: dict) -> Path:
    """results/<model folder>/<grid file stem> in the checkout the grid belongs to (else under the
    cwd), written relative to the cwd."""
    home = checkout_of(grid_path) or Path.cwd()
    target = home / "results" / str(spec.get("model") or "custom") / Path(grid_path).stem
    try:
        return Path(os.path.relpath(target))
    except ValueError:  # another drive on Windows
        return target


def expand(spec: dict, output_root: str | Path, sets: dict | None = None, axes: dict | None = None,
           src: str = "grid") -> list[Run]:
    """Every run of a grid, fully resolved and validated; raises HubError before anything runs."""
    base_args, base = _split(spec.get("base") or {}, f"{src}: base")
    base_flat = _flat(base, f"{src}: base")
    set_args, set_over = _split(sets or {}, "--set")
    sets_flat = _flat(set_over, "--set")
    cells = _cells(spec, src, axes or {})
    from .. import data as data_mod  # imports torch: only once the grid itself is known to be sound
    from .. import methods

    search = _check_search(spec.get("search"), src)
    runs, seen, screens = [], {}, {}
    for i, (labels, cell_args, cell_flat) in enumerate(cells):
        args = {**base_args, **cell_args, **set_args}
        args.setdefault("action", spec.get("action") or "train")
        if args["action"] not in ACTIONS:
            raise HubError(f"{src}: unknown action '{args['action']}'; allowed: {', '.join(ACTIONS)}")
        flat = {**base_flat, **cell_flat, **sets_flat}
        try:  # baselines start from the folder's baseline checkpoint (e.g. Instruct)
            cfg = resolve(str(spec["model"]) if spec.get("model") else None, spec.get("task"),
                          layers=[("", flat)], action=args["action"])
            methods.check_method(cfg.method.method)
            data_mod.task_spec(cfg.data)
            if args["action"] == "baseline":
                _check_mode(args.get("mode", "zero-shot"))
            name = _name(spec.get("name"), labels, cfg, args, i)
        except HubError as e:
            raise HubError(f"{src}: run {i + 1} ({describe(labels or flat)}): {e}") from None
        if name in seen:
            raise HubError(f"{src}: runs {seen[name] + 1} and {i + 1} would share the folder '{name}'; "
                           "put the keys that differ into the 'name' template")
        seen[name] = i
        cfg = apply_overrides(cfg, {"output_dir": str(Path(output_root) / name)})
        run = Run(name, args.pop("action"), cfg.to_dict(), {k: v for k, v in args.items() if k != "name"},
                  {**labels, **cell_flat})
        if search and run.action == "train" and search["key"] not in cell_flat:  # a run's own value stands
            try:
                run.search_key = search["key"]
                run.screens, run.reserve, run.finals, run.lead = _screens(search, cfg, labels, output_root, screens)
                run.finalists = search["finalists"]
            except HubError as e:
                raise HubError(f"{src}: run {i + 1} ({name}): search: {e}") from None
        runs.append(run)
    return runs


def _check_search(search, src: str) -> dict | None:
    """A grid's `search` block: {key, values (a list, or lists by method), screen (overrides), group,
    extend (like values), finalists}."""
    if search is None:
        return None
    where = f"{src}: search"
    if not isinstance(search, dict) or set(search) - set(SEARCH_KEYS) or not {"key", "values", "screen"} <= set(search):
        raise HubError(f"{where}: expected {{key, values, screen[, group, extend, finalists]}}, got {search!r}")
    key = search["key"]
    if not isinstance(key, str) or key.split(".")[-1] not in leaf_fields():
        raise HubError(f"{where}: key {key!r} is not a config key")
    for part in ("values", "extend")[:2 if "extend" in search else 1]:
        given = search[part]
        lists = given.values() if isinstance(given, dict) else [given]
        if not all(isinstance(v, list) and v for v in lists):
            raise HubError(f"{where}: {part} must be a non-empty list, or a non-empty list per method")
    if not isinstance(search["screen"], dict):
        raise HubError(f"{where}: screen must be a mapping of config keys, got {search['screen']!r}")
    screen = _flat(search["screen"], f"{where}: screen")
    if not screen.get("eval_steps"):
        raise HubError(f"{where}: screen must set eval_steps (a screening run's result is its validation loss)")
    finalists = search.get("finalists", 1)
    if not isinstance(finalists, int) or isinstance(finalists, bool) or finalists < 1:
        raise HubError(f"{where}: finalists must be a whole number >= 1 (1: no second rung), got {finalists!r}")
    return {"key": key.split(".")[-1], "values": search["values"], "screen": screen, "finalists": finalists,
            "group": search.get("group") or "{pretrained_ckpt}_{method}", "extend": search.get("extend") or {}}


def _screens(search: dict, cfg: RunConfig, labels: dict, output_root,
             made: dict) -> tuple[list[Run], list[Run], dict, Path]:
    """The screening runs of one training run, its reserve (`extend`), the full-length runs of its
    second rung (by value) and its group's lead, all shared with every run of the same group (the
    group's first run is its lead: the full-length runs take its recipe)."""
    method = cfg.method.method
    values, extend = search["values"], search["extend"]
    if isinstance(values, dict):
        if method not in values:
            raise HubError(f"no values for method '{method}' (given for {', '.join(values)})")
        values = values[method]
    extend = extend.get(method, []) if isinstance(extend, dict) else extend
    if extend and not (min(extend) > max(values) and extend == sorted(extend)):
        raise HubError(f"extend {extend} must rise from above the largest value ({max(values)})")
    group = _name(search["group"], labels, cfg, {}, 0)
    lead = made.setdefault(("lead", group), Path(cfg.output_dir))
    out, finals = [], {}
    for value in [*values, *extend]:
        stages = {}
        for stage, screen in (("", search["screen"]), ("_full", {})):  # 30 steps, say, and the whole recipe
            name = _name(f"{group}_{search['key']}-{value}{stage}", {}, cfg, {}, 0)
            if name not in made:
                over = {**screen, search["key"]: value, "output_dir": str(Path(output_root) / "screen" / name)}
                made[name] = Run(name, "screen", apply_overrides(cfg, over).to_dict(), {}, {search["key"]: value})
            stages[stage] = made[name]
        out.append(stages[""])
        finals[value] = stages["_full"]
    return out[:len(values)], out[len(values):], finals, lead


def describe(over: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in over.items()) or "base"


def _check_mode(mode: str) -> None:
    from ..baseline import MODES

    if mode not in MODES:
        raise HubError(f"unknown baseline mode '{mode}'; allowed: {', '.join(MODES)}")
