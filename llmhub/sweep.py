"""Sweeps: a grid of config overrides written as data -> one experiment directory per run.

A grid file (YAML):

    model: flan-t5              # model folder whose recipe is the starting point (llmhub/recipes.py)
    task: classification        # default task (a grid axis or base may set `task` too)
    action: train               # train | baseline (zero-/few-shot, llmhub/baseline.py)
    name: "r{lora_r}_d{lora_dropout}_e{epochs}"   # run folder name; {any config key} or {axis}
    base: {epochs: 5}           # overrides shared by every run (nested, dotted or flat keys)
    grid:                       # cartesian product of the listed values
      lora_r: [2, 4, 8, 16]
      lora_dropout: [0.1, 0.2]
    runs:                       # optional explicit runs, added after the grid product
      - {name: full, method: full, learning_rate: 2.0e-5}

Each run's config = defaults -> recipe(model, task) -> base -> grid cell / run -> `--set`; leaf
names are unique in the config, so merging flat dicts is a merge at every depth. Every run is
validated before anything runs. A run whose `results.json` exists is skipped, so rerunning a killed
sweep resumes it; a failing run writes `error.json` into its folder and the others go on; the
sweep exits non-zero at the end if any run failed.
"""
from __future__ import annotations

import argparse
import itertools
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import SECTIONS, RunConfig, apply_overrides, flatten, load_yaml
from .errors import HubError

REPO_ROOT = Path(__file__).resolve().parents[1]
FILE_KEYS = ("model", "task", "action", "name", "base", "grid", "runs", "description")
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

    @property
    def out_dir(self) -> Path:
        return Path(self.config["output_dir"])

    def status(self) -> str:
        """done (skipped) | failed (retried) | partial (resumed) | pending."""
        if (self.out_dir / "results.json").exists():
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
    return spec


def parse_sets(items: list[str], flag: str = "--set") -> dict:
    """['k=v', ...] -> {k: yaml value}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise HubError(f"{flag} expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


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
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", raw).strip("-") or f"run{index:02d}"


def default_output_root(grid_path: str | Path, spec: dict) -> Path:
    """results/<model folder>/<grid file stem> in the repository, written relative to the cwd."""
    target = REPO_ROOT / "results" / str(spec.get("model") or "custom") / Path(grid_path).stem
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
    from . import data as data_mod  # imports torch: only once the grid itself is known to be sound
    from . import methods
    from .recipes import baseline_defaults, defaults

    runs, seen = [], {}
    for i, (labels, cell_args, cell_flat) in enumerate(cells):
        args = {**base_args, **cell_args, **set_args}
        args.setdefault("action", spec.get("action") or "train")
        if args["action"] not in ACTIONS:
            raise HubError(f"{src}: unknown action '{args['action']}'; allowed: {', '.join(ACTIONS)}")
        flat = {**base_flat, **cell_flat, **sets_flat}
        task = flat.get("task") or spec.get("task") or "summarization"
        try:
            cfg = RunConfig()
            if spec.get("model"):  # baselines start from the folder's baseline checkpoint (e.g. Instruct)
                recipe = baseline_defaults if args["action"] == "baseline" else defaults
                cfg = apply_overrides(cfg, recipe(str(spec["model"]), str(task)))
            cfg = apply_overrides(cfg, {"task": task, **flat})
            methods.check_method(cfg.method.method)
            data_mod.task_spec(cfg.data)
            if args["action"] == "baseline":
                _check_mode(args.get("mode", "zero-shot"))
            name = _name(spec.get("name"), labels, cfg, args, i)
        except HubError as e:
            raise HubError(f"{src}: run {i + 1} ({_describe(labels or flat)}): {e}") from None
        if name in seen:
            raise HubError(f"{src}: runs {seen[name] + 1} and {i + 1} would share the folder '{name}'; "
                           "put the keys that differ into the 'name' template")
        seen[name] = i
        cfg = apply_overrides(cfg, {"output_dir": str(Path(output_root) / name)})
        runs.append(Run(name, args.pop("action"), cfg.to_dict(),
                        {k: v for k, v in args.items() if k != "name"}, {**labels, **cell_flat}))
    return runs


def _describe(over: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in over.items()) or "base"


def _primary(metrics: dict | None) -> str:
    if not metrics:
        return ""
    for key in ("accuracy", "rouge1"):
        if isinstance(metrics.get(key), (int, float)):
            return f"{key} {metrics[key]:.2f}"
    return ""


def _check_mode(mode: str) -> None:
    from .baseline import MODES

    if mode not in MODES:
        raise HubError(f"unknown baseline mode '{mode}'; allowed: {', '.join(MODES)}")


def _baseline(cfg: RunConfig, args: dict) -> dict:
    """Zero-/few-shot evaluation through the baseline module (the one implementation)."""
    from . import baseline

    return baseline.run_baseline(cfg, mode=args.get("mode", "zero-shot"))


def run_one(run: Run) -> dict:
    """Execute one run in this process; a failure is written to <run dir>/error.json, never raised."""
    start = time.perf_counter()
    err_path = run.out_dir / "error.json"
    try:
        cfg = apply_overrides(RunConfig(), run.config)
        if run.action == "train":
            from .experiment import train_experiment

            record = train_experiment(cfg, resume=True)  # an interrupted run continues from its checkpoint
        else:
            record = _baseline(cfg, run.args)
        err_path.unlink(missing_ok=True)
        return {"name": run.name, "status": "done", "seconds": time.perf_counter() - start,
                "metric": _primary((record or {}).get("metrics"))}
    except Exception as e:  # noqa: BLE001 - one bad run must not stop the sweep
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        record_error(run, message, traceback.format_exc())
        return {"name": run.name, "status": "failed", "seconds": time.perf_counter() - start, "error": message}


def record_error(run: Run, message: str, trace: str = "") -> None:
    from .results import write_json

    write_json(run.out_dir / "error.json", {"name": run.name, "action": run.action, "args": run.args,
                                            "error": message, "traceback": trace,
                                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "config": run.config})


def _run_local(runs: list[Run], log) -> list[dict]:
    out = []
    for i, run in enumerate(runs, 1):
        print(f"[{i}/{len(runs)}] {run.name}: {run.action} ({run.status()})", file=log, flush=True)
        out.append(run_one(run))
        _log_result(out[-1], log)
    return out


def init_ray(address: str | None = None, init_kwargs: dict | None = None):
    """Connect to a Ray cluster (or start a local one); workers get this package on their path."""
    try:
        import ray
    except ImportError:
        raise HubError("--backend ray needs the ray package (pip install 'ray[default]')") from None
    if not ray.is_initialized():
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}},
                 **(init_kwargs or {}))
    return ray


def _run_ray(runs: list[Run], log, gpus_per_trial: float | None, cpus_per_trial: float,
             ray_address: str | None, ray_init: dict | None) -> list[dict]:
    """One Ray task per run; the cluster schedules them by their CPU/GPU requests."""
    ray = init_ray(ray_address, ray_init)
    if gpus_per_trial is None:  # one GPU per trial on a GPU cluster, none on CPU-only clusters
        gpus_per_trial = 1 if ray.cluster_resources().get("GPU", 0) else 0
    task = ray.remote(num_gpus=gpus_per_trial, num_cpus=cpus_per_trial, max_retries=0)(run_one)
    print(f"ray: {len(runs)} trials, {cpus_per_trial} CPU + {gpus_per_trial} GPU each; "
          f"cluster {ray.cluster_resources()}", file=log, flush=True)
    pending = {task.remote(run): run for run in runs}
    out = []
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(done[0])
        try:
            result = ray.get(done[0])
        except Exception as e:  # noqa: BLE001 - the worker died (e.g. out of memory): record it here
            message = f"{type(e).__name__}: {e}".splitlines()[0]
            record_error(run, message)
            result = {"name": run.name, "status": "failed", "error": message}
        out.append(result)
        _log_result(result, log)
    return out


def _log_result(result: dict, log) -> None:
    if result["status"] == "done":
        print(f"  {result['name']}: done in {result.get('seconds', 0):.0f} s {result.get('metric', '')}",
              file=log, flush=True)
    else:
        print(f"  {result['name']}: FAILED {result['error']}", file=log, flush=True)


def run_sweep(runs: list[Run], backend: str = "local", dry_run: bool = False, gpus_per_trial: float | None = None,
              cpus_per_trial: float = 1, ray_address: str | None = None, ray_init: dict | None = None,
              log=None) -> list[dict]:
    """Run every unfinished run; returns one result per run that ran (none for a dry run)."""
    log = log or sys.stdout
    todo = [r for r in runs if r.status() != "done"]
    for run in runs:
        if dry_run or run.status() == "done":
            state = run.status()
            verb = {"done": "skip (results.json exists)", "failed": "retry (error.json)",
                    "partial": "resume", "pending": "run"}[state]
            args = "".join(f" {k}={v}" for k, v in run.args.items())
            print(f"{verb:26s} {run.out_dir}  [{run.action}{args}] {_describe(run.overrides)}", file=log)
    print(f"{len(runs)} runs: {len(todo)} to run, {len(runs) - len(todo)} finished", file=log, flush=True)
    if dry_run or not todo:
        return []
    if backend == "local":
        return _run_local(todo, log)
    if backend == "ray":
        return _run_ray(todo, log, gpus_per_trial, cpus_per_trial, ray_address, ray_init)
    raise HubError(f"unknown backend '{backend}'; allowed: local, ray")


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments from a YAML file (resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", help="grid file, e.g. flan-t5/grids/lora.yaml")
    p.add_argument("--output_root", help="folder of the run folders (default: results/<model>/<grid name>)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the runs and what would happen to each; write nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run, e.g. --set data_dir=../data --set train_samples=64")
    p.add_argument("--grid", dest="axes", action="append", default=[], metavar="KEY=V1,V2",
                   help="replace (or add) a grid axis, e.g. --grid lora_r=4,8 to shrink a sweep")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: one run after another; ray: one Ray task per run")
    p.add_argument("--gpus_per_trial", type=float, default=None,
                   help="ray: GPUs per run (default: 1 on a GPU cluster, else 0)")
    p.add_argument("--cpus_per_trial", type=float, default=1, help="ray: CPUs per run")
    p.add_argument("--ray_address", default=None, help="ray: cluster address (default: $RAY_ADDRESS or a local Ray)")


def main(args) -> None:
    """`python -m llmhub sweep`: validate everything, run what is unfinished, fail if any run failed."""
    spec = load_grid(args.grid)
    root = Path(args.output_root) if args.output_root else default_output_root(args.grid, spec)
    runs = expand(spec, root, parse_sets(args.set), parse_axes(args.axes), src=str(args.grid))
    if not args.dry_run:
        from .results import write_json

        try:  # repository-relative, so committed sweep files hold no machine paths
            grid_name = str(Path(args.grid).resolve().relative_to(REPO_ROOT))
        except ValueError:
            grid_name = Path(args.grid).name
        write_json(root / "sweep.json", {"grid": grid_name, "spec": spec, "set": args.set, "grid_axes": args.axes,
                                         "runs": [{"name": r.name, "action": r.action, "args": r.args,
                                                   "overrides": r.overrides} for r in runs]})
    try:
        results = run_sweep(runs, args.backend, args.dry_run, args.gpus_per_trial, args.cpus_per_trial,
                            args.ray_address)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume (finished runs are skipped)", file=sys.stderr)
        sys.exit(130)
    failed = [r for r in results if r["status"] != "done"]
    if failed:
        names = ", ".join(r["name"] for r in failed)
        raise HubError(f"{len(failed)} of {len(results)} runs failed ({names}); "
                       f"see error.json in each run folder under {root}")
    if results:
        print(f"all {len(results)} runs finished; results under {root}")

