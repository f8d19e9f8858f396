"""Sweeps: run every run of a grid file (format and validation: llmhub/study/grid.py), here or on Ray.

`python -m llmhub sweep flan-t5/grids/lora_ablation.yaml` resolves and validates every run first, then runs
the unfinished ones. A run whose `results.json` exists is skipped, so rerunning a killed sweep
resumes it (an interrupted training run continues from its last checkpoint); a failing run writes
`error.json` into its folder and the others go on; the sweep exits non-zero at the end if any run
failed. `--backend ray` submits one Ray task per run with the CPUs/GPUs each trial asks for.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from dataclasses import fields, replace
from pathlib import Path

from ..cluster import init_ray
from ..config import SECTIONS, RunConfig, apply_overrides, flatten
from ..errors import HubError
from ..results import finished_record
from . import grid
from .grid import Run, checkout_of, describe, default_output_root, expand, load_grid, parse_axes, parse_sets


def _primary(record: dict | None) -> str:
    """The run's headline: validation loss (what selects) first where it has one, then its test metric."""
    metrics = (record or {}).get("metrics") or {}
    loss = ((record or {}).get("validation") or {}).get("loss")
    shown = [f"validation loss {loss:.4f}"] if isinstance(loss, (int, float)) else []
    shown += [f"test {key} {metrics[key]:.2f}" for key in ("accuracy", "rouge1")
              if isinstance(metrics.get(key), (int, float))][:1]
    return ", ".join(shown)


def _baseline(cfg: RunConfig, args: dict) -> dict:
    """Zero-/few-shot evaluation through the baseline module (the one implementation)."""
    from .. import baseline

    return baseline.run_baseline(cfg, mode=args.get("mode", "zero-shot"))


def run_one(run: Run) -> dict:
    """Execute one run in this process; a failure is written to <run dir>/error.json, never raised."""
    start = time.perf_counter()
    err_path = run.out_dir / "error.json"
    try:
        cfg = apply_overrides(RunConfig(), run.config)
        if run.action == "train":
            from ..experiment import train_experiment

            record = train_experiment(cfg, resume=True)  # an interrupted run continues from its checkpoint
        elif run.action == "screen":
            from ..experiment import screen_experiment

            record = screen_experiment(cfg)
        else:
            record = _baseline(cfg, run.args)
        err_path.unlink(missing_ok=True)
        return {"name": run.name, "status": "done", "seconds": time.perf_counter() - start,
                "metric": _primary(record)}
    except Exception as e:  # noqa: BLE001 - one bad run must not stop the sweep
        message = f"{type(e).__name__}: {e}".splitlines()[0]
        record_error(run, message, traceback.format_exc())
        return {"name": run.name, "status": "failed", "seconds": time.perf_counter() - start, "error": message}


def record_error(run: Run, message: str, trace: str = "") -> None:
    from ..results import write_json

    write_json(run.out_dir / "error.json", {"name": run.name, "action": run.action, "args": run.args,
                                            "error": message, "traceback": trace,
                                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "config": run.config})


def _validation_loss(record: dict | None) -> float | None:
    loss = ((record or {}).get("validation") or {}).get("loss")
    return loss if isinstance(loss, (int, float)) and math.isfinite(loss) else None


def _loss(screen: Run) -> float | None:
    return _validation_loss(finished_record(screen.out_dir / "results.json"))


def grown(run: Run) -> Run:
    """The run with its reserve's next value moved into its screens while every screen has finished
    and the largest value screened has the lowest validation loss (grid `extend`)."""
    while run.reserve and (ranked := _ranked(run)) and ranked[0] == max(ranked):
        run = replace(run, screens=[*run.screens, run.reserve[0]], reserve=run.reserve[1:])
    return run


def _ranked(run: Run) -> list | None:
    """The screened values, lowest validation loss first (the first listed on a tie); None while a
    screening run has no loss. Each results.json is read once."""
    losses = [_loss(s) for s in run.screens]
    if None in losses:
        return None
    return [run.screens[i].overrides[run.search_key] for i in sorted(range(len(losses)), key=losses.__getitem__)]


def finalists(run: Run) -> list | None:
    """The values of the run's second rung: its `finalists` best screened values, best first."""
    ranked = _ranked(run)
    return None if ranked is None else ranked[:run.finalists]


def _full_loss(run: Run, value) -> float | None:
    """The full-length validation loss of `value`: that of the value's full-length run, else the
    group's lead's when it finished with that value (None while neither has one). A lead retrained
    after its value lost at full length leaves its old run as that value's full-length run."""
    if (loss := _loss(run.finals[value])) is not None:
        return loss
    record = finished_record(run.lead / "results.json") if run.lead else None
    if record and flatten(record["config"]).get(run.search_key) == value:
        return _validation_loss(record)
    return None


def missing_finals(run: Run, lead_trains: bool = False) -> list[Run]:
    """The full-length runs its second rung still needs (none for a one-rung search, or while
    screening runs are unfinished); with `lead_trains`, the screens' winner is left to the lead."""
    top = finalists(run) if run.finalists > 1 else None
    return [run.finals[v] for v in (top or [])[lead_trains:] if _full_loss(run, v) is None]


def choice(run: Run):
    """The value the search chooses: of lowest full-length validation loss among the finalists
    (the better screened on a tie), or with one rung of lowest screening loss; None while unfinished."""
    top = finalists(run)
    if top is None or run.finalists == 1:
        return None if top is None else top[0]
    losses = [_full_loss(run, v) for v in top]
    return None if None in losses else top[losses.index(min(losses))]


def _is_lead(run: Run) -> bool:
    return run.finalists > 1 and run.out_dir == run.lead


def _chosen(run: Run):
    """choice(run); the lead of an unfinished second rung takes the screens' winner (it is that value's
    full-length run); a screening or full-length run without a loss is an error naming it."""
    if (value := choice(run)) is not None:
        return value
    for screen in run.screens:
        if _loss(screen) is None:
            raise HubError(f"screening run {screen.name} has no validation loss (see {screen.out_dir})")
    if _is_lead(run):
        return finalists(run)[0]
    final = missing_finals(run)[0]
    raise HubError(f"full-length run {final.name} has no validation loss (see {final.out_dir})")


def searched(run: Run) -> Run:
    """The run with its search key set to the search's choice (`_chosen`); a screening or
    full-length run without a loss fails the run, naming it."""
    if not run.screens:
        return run
    chosen = _chosen(run)
    cfg = apply_overrides(RunConfig(), run.config)
    if getattr(getattr(cfg, _section(run.search_key)), run.search_key) == chosen:
        return run
    return replace(run, config=apply_overrides(cfg, {run.search_key: chosen}).to_dict(),
                   overrides={**run.overrides, run.search_key: chosen})


def _section(key: str) -> str:
    return next(name for name, cls in SECTIONS.items() if key in {f.name for f in fields(cls)})


def _unfinished_screens(runs: list[Run]) -> list[Run]:
    return _unique(s for run in runs for s in run.screens if s.status() != "done")


def _unique(runs) -> list[Run]:
    """`runs` without repeats (screening runs are shared by the runs of a group)."""
    return list({r.name: r for r in runs}.values())


def _run_searched(run: Run) -> dict:
    try:
        run = searched(run)
    except HubError as e:
        record_error(run, str(e))
        return {"name": run.name, "status": "failed", "error": str(e)}
    return run_one(run)


def _screen_local(run: Run, where: str, out: list[dict], log) -> Run:
    """Run `run`'s unfinished screening runs, and those `extend` adds, each once (one that fails
    fails its run, named); the run grown by them."""
    ran: set[str] = set()
    while True:
        run = grown(run)
        todo = [s for s in _unfinished_screens([run]) if s.name not in ran]
        if not todo:
            return run
        for screen in todo:
            ran.add(screen.name)
            print(f"{where} screen {screen.name}: {run.search_key}={screen.overrides[run.search_key]} "
                  f"({screen.status()})", file=log, flush=True)
            out.append(run_one(screen))
            _log_result(out[-1], log)


def _run_local(runs: list[Run], log, screen_only: bool = False) -> list[dict]:
    """One run after another; a run's screening runs go just before it (so the first results come
    early), skipped where an earlier run of its group already screened. With a second rung, a
    group's lead trains first and the other finalists' full-length runs after it."""
    out: list[dict] = []
    for i, run in enumerate(runs, 1):
        where = f"[{i}/{len(runs)}]"
        run = _screen_local(run, where, out, log)
        lead_first = _is_lead(run) and not screen_only
        if lead_first:
            _train_local(run, where, out, log)
        for final in missing_finals(run):
            print(f"{where} full-length {final.name}: {run.search_key}={final.overrides[run.search_key]} "
                  f"({final.status()})", file=log, flush=True)
            out.append(run_one(final))
            _log_result(out[-1], log)
        if not (screen_only or lead_first):
            _train_local(run, where, out, log)
    return out


def _train_local(run: Run, where: str, out: list[dict], log) -> None:
    print(f"{where} {run.name}: {run.action} ({run.status()})", file=log, flush=True)
    out.append(_run_searched(run))
    _log_result(out[-1], log)


def _run_ray(runs: list[Run], log, gpus_per_trial: float | None, cpus_per_trial: float,
             ray_address: str | None, ray_init: dict | None, screen_only: bool = False) -> list[dict]:
    """One Ray task per run; the cluster schedules them by their CPU/GPU requests."""
    ray = init_ray(ray_address, ray_init)
    if gpus_per_trial is None:  # one GPU per trial on a GPU cluster, none on CPU-only clusters
        gpus_per_trial = 1 if ray.cluster_resources().get("GPU", 0) else 0
    task = ray.remote(num_gpus=gpus_per_trial, num_cpus=cpus_per_trial, max_retries=0)(run_one)
    print(f"ray: {len(runs)} trials, {cpus_per_trial} CPU + {gpus_per_trial} GPU each; "
          f"cluster {ray.cluster_resources()}", file=log, flush=True)
    out, ran = [], set()
    # stage 1: every screening run (again for the screens `extend` adds); stage 2: the runs themselves
    while True:
        runs = [grown(r) for r in runs]
        screens = [s for s in _unfinished_screens(runs) if s.name not in ran]
        if not screens:
            break
        ran.update(s.name for s in screens)
        out += _ray_stage(ray, task, screens, log)
    train = ray.remote(num_gpus=gpus_per_trial, num_cpus=cpus_per_trial, max_retries=0)(_run_searched)
    # a second rung: the groups' leads first (each the full-length run of its screens' winner), then the
    # other finalists' full-length runs, then the remaining runs with the value chosen
    leads = [] if screen_only else [r for r in runs if _is_lead(r)]
    out += _ray_stage(ray, train, leads, log) if leads else []
    out += _ray_stage(ray, task, _unique(f for r in runs for f in missing_finals(r)), log)
    if screen_only:
        return out
    return out + _ray_stage(ray, train, [r for r in runs if not _is_lead(r)], log)


def _ray_stage(ray, task, runs: list[Run], log) -> list[dict]:
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


def stale_choice(run: Run) -> str | None:
    """For a finished searched run: a note when the search now chooses another value than the one
    the run trained with (e.g. after `extend` screened more, or another finalist won the second
    rung), or, for a group's lead, when its search has runs still to run (e.g. `extend` or
    `finalists` added after it trained)."""
    if not run.screens or run.status() != "done":
        return None
    best = choice(run)
    if best is None:  # named once per group, at its lead
        if run.out_dir != run.lead:
            return None
        top = finalists(run)
        stage, pending = (("screening", [s.overrides[run.search_key] for s in run.screens if _loss(s) is None])
                          if top is None else ("full-length", [v for v in top if _full_loss(run, v) is None]))
        return (f"{run.name}: its search has not finished ({stage} {run.search_key}="
                f"{', '.join(f'{v:g}' for v in pending)} to run); `sweep --screen_only --only {run.name}` runs it")
    used = flatten(finished_record(run.out_dir / "results.json")["config"]).get(run.search_key)
    if used == best:
        return None
    stale = f"{run.name}: its search now chooses {run.search_key}={best:g} (it trained with {used:g}); "
    if _is_lead(run) and used in run.finals:  # it is `used`'s full-length run: kept there, not removed
        return stale + (f"move {run.out_dir} to {run.finals[used].out_dir} (the full-length run of {used:g}) "
                        "and rerun to train it with that")
    return stale + f"remove {run.out_dir} and rerun to train it with that"


def run_sweep(runs: list[Run], backend: str = "local", dry_run: bool = False, gpus_per_trial: float | None = None,
              cpus_per_trial: float = 1, ray_address: str | None = None, ray_init: dict | None = None,
              log=None, screen_only: bool = False) -> list[dict]:
    """Run every unfinished run (with `screen_only`: the screening runs of every searched run,
    finished or not, and no run itself); returns one result per run that ran (none for a dry run)."""
    log = log or sys.stdout
    todo = [r for r in runs if (r.screens if screen_only else r.status() != "done")]
    for run in runs:
        planned = grown(run)
        finals = missing_finals(planned, lead_trains=_is_lead(planned) and not screen_only)
        for screen in [*planned.screens, *finals] if dry_run and run in todo else []:
            print(f"{'screen (' + screen.status() + ')':26s} {screen.out_dir}  [{describe(screen.overrides)}]",
                  file=log)
        if dry_run or run.status() == "done":
            state = run.status()
            verb = {"done": "skip (results.json exists)", "failed": "retry (error.json)",
                    "partial": "resume", "pending": "run"}[state]
            args = "".join(f" {k}={v}" for k, v in run.args.items())
            print(f"{verb:26s} {run.out_dir}  [{run.action}{args}] {describe(run.overrides)}", file=log)
    print(f"{len(runs)} runs: {len(todo)} to " + ("screen" if screen_only else
          f"run, {len(runs) - len(todo)} finished"), file=log, flush=True)
    out = []
    if todo and not dry_run:
        if backend == "local":
            out = _run_local(todo, log, screen_only)
        elif backend == "ray":
            out = _run_ray(todo, log, gpus_per_trial, cpus_per_trial, ray_address, ray_init, screen_only)
        else:
            raise HubError(f"unknown backend '{backend}'; allowed: local, ray")
    for note in filter(None, map(stale_choice, [grown(r) for r in runs])):
        print(f"note: {note}", file=log, flush=True)
    return out


def select(runs: list[Run], names: list[str]) -> list[Run]:
    """The runs named by --only (all of them when none are named); an unknown name is an error."""
    unknown = sorted(set(names) - {r.name for r in runs})
    if unknown:
        raise HubError(f"--only: no run named {', '.join(unknown)}; runs: {', '.join(r.name for r in runs)}")
    return [r for r in runs if r.name in names] if names else runs


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a grid of experiments from a YAML file (resumable)",
                       description=f"{__doc__}\n{grid.__doc__}", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("grid", help="grid file, e.g. flan-t5/grids/lora_ablation.yaml")
    p.add_argument("--output_root", help="folder of the run folders (default: results/<model>/<grid name>)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="list the runs and what would happen to each; write nothing")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key in every run, e.g. --set data_dir=../data --set train_samples=64")
    p.add_argument("--grid", dest="axes", action="append", default=[], metavar="KEY=V1,V2",
                   help="replace (or add) a grid axis, e.g. --grid lora_r=4,8 to shrink a sweep")
    p.add_argument("--screen_only", "--screen-only", action="store_true",
                   help="run only the searches' screening runs (and second rungs' full-length runs) of the selected "
                        "runs, finished runs too (e.g. after adding `extend` or `finalists`), and say which finished "
                        "runs the search would now train otherwise")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only the named runs (repeatable, or comma-separated), e.g. --only lora,full")
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
    chosen = select(runs, [n for item in args.only for n in item.split(",") if n])
    if not args.dry_run:
        from ..results import write_json

        # relative to the checkout, so committed sweep files hold no machine paths
        home = checkout_of(args.grid)
        grid_name = str(Path(args.grid).resolve().relative_to(home)) if home else Path(args.grid).name
        write_json(root / "sweep.json", {"grid": grid_name, "study": spec.get("study"), "spec": spec,
                                         "set": args.set, "grid_axes": args.axes,
                                         "runs": [{"name": r.name, "action": r.action, "args": r.args,
                                                   "overrides": r.overrides,
                                                   **({"search": {"key": r.search_key,
                                                                  "screens": [x.name for x in r.screens],
                                                                  "extend": [x.name for x in r.reserve],
                                                                  "finalists": r.finalists}}
                                                      if r.screens else {})} for r in runs]})
    try:
        results = run_sweep(chosen, args.backend, args.dry_run, args.gpus_per_trial, args.cpus_per_trial,
                            args.ray_address, screen_only=args.screen_only)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume (finished runs are skipped)", file=sys.stderr)
        sys.exit(130)
    failed = [r for r in results if r["status"] != "done"]
    if failed:
        names = ", ".join(r["name"] for r in failed)
        raise HubError(f"{len(failed)} of {len(results)} runs failed ({names}); "
                       f"see error.json in each run folder under {root}")
    if results:
        print(f"all {len(results)} {'screening ' if args.screen_only else ''}runs finished; results under {root}")

