"""`python -m llmhub <command>`; the per-model scripts call the same functions, so they never drift.

Commands: train, evaluate, baseline, prepare-data, demo, models, sweep, report.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import config as config_mod
from .errors import run


def _print_summary(record: dict) -> None:
    if not record:
        return
    m = record["metrics"]
    shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in m.items()}
    print(json.dumps({"metrics": shown, "output_dir": record["config"]["output_dir"]}, indent=2))


def _train_parser(parser: argparse.ArgumentParser, defaults: dict) -> None:
    config_mod.add_flags(parser, defaults)
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")


def cmd_train(args, model: str | None, task: str | None = None) -> None:
    from .experiment import train_experiment
    from .resolve import from_args

    cfg = from_args(args, model, task)
    print(f"config: {json.dumps(cfg.to_dict())}", file=sys.stderr)
    _print_summary(train_experiment(cfg, overwrite=args.overwrite, resume=args.resume))


def cmd_evaluate(args) -> None:
    from .experiment import evaluate_experiment

    from .resolve import parse_sets

    sets = parse_sets(args.set)
    if args.test_samples is not None:
        sets["test_samples"] = args.test_samples
    if args.data_dir is not None:
        sets["data_dir"] = args.data_dir
    if args.eval_engine is not None:
        sets["eval_engine"] = args.eval_engine
    _print_summary(evaluate_experiment(args.experiment_dir, sets, overwrite=args.overwrite, name=args.name))


def _evaluate_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment_dir", help="a trained experiment directory (holds config.yaml and model/)")
    p.add_argument("--data_dir", help="data folder, if it moved since training")
    p.add_argument("--test_samples", type=int, help="evaluate on the first N test examples")
    p.add_argument("--eval_engine", choices=config_mod.EVAL_ENGINES,
                   help="generate in this process (transformers) or with vLLM's offline engine (vllm; "
                        "needs make -C inference/vllm venv)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override an evaluation setting (test_samples, eval_batch_size, max_new_tokens, ...)")
    p.add_argument("--name", help="write this evaluation to EXP/eval/NAME/ (default: in place for a run "
                                  "without results, else eval/<changed settings> or eval/default)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run's own results.json and predictions.jsonl (or those of eval/NAME)")


def _baseline_parser(parser: argparse.ArgumentParser, defaults: dict) -> None:
    config_mod.add_flags(parser, defaults)
    from .baseline import MODES

    parser.add_argument("--prompt", choices=list(MODES), default="zero-shot",
                        help="zero-shot: instructions only; few-shot: plus one example per class / two dialogues")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir")


def cmd_baseline(args, model: str | None, task: str | None = None) -> None:
    from .baseline import output_dir, run_baseline
    from .resolve import from_args

    cfg = from_args(args, model, task, "baseline", extra=lambda t: output_dir(model, t, args.prompt))
    print(f"config: {json.dumps(cfg.to_dict())}", file=sys.stderr)
    _print_summary(run_baseline(cfg, args.prompt, overwrite=args.overwrite))


def _help_defaults(model: str | None, task: str | None, action: str, argv: list[str] | None = None) -> dict:
    """The recipe the flags' help shows as defaults: --task is read ahead of the full parse (the
    run itself is resolved by llmhub/resolve.py once every flag is known)."""
    from .recipes import defaults
    from .resolve import final_task

    if not model:
        return {}
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task")
    given = pre.parse_known_args(argv)[0].task
    return defaults(model, final_task(model, task, [("", {"task": given})] if given else []), action)


def build_parser() -> argparse.ArgumentParser:
    from .recipes import FOLDERS

    parser = argparse.ArgumentParser(prog="python -m llmhub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="fine-tune and evaluate one experiment")
    p.add_argument("--model", default=None, choices=list(FOLDERS),
                   help="model folder whose defaults to start from (flags override them)")
    _train_parser(p, {})
    _evaluate_parser(sub.add_parser("evaluate", help="evaluate a trained experiment directory"))
    p = sub.add_parser("baseline", help="zero-/few-shot evaluation of a base model (no adapter)")
    p.add_argument("--model", default=None, choices=list(FOLDERS),
                   help="model folder whose defaults to start from (flags override them)")
    _baseline_parser(p, {})
    p = sub.add_parser("prepare-data", help="download the datasets from the hub into a data folder")
    p.add_argument("--data_dir", default="data")
    p = sub.add_parser("demo", help="LoRA on SmolLM2-135M with SAMSum: zero-shot vs fine-tuned ROUGE")
    p.add_argument("--data_dir", default="data")
    p.add_argument("--output_dir", default="experiments/demo")
    p.add_argument("--train_samples", type=int, default=300)
    p.add_argument("--test_samples", type=int, default=100)
    p.add_argument("--epochs", type=float, default=1.0)
    sub.add_parser("models", help="list the registry's short model names, their size and whether each is installed")
    from .study import report, sweep

    sweep.add_parser(sub)
    report.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    # bitsandbytes warns on import on CPUs with AVX512-BF16 that its optional fused kernel (a hub
    # download) is missing; its own CPU kernels are used instead, so the line is only noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    args = build_parser().parse_args(argv)

    def go():
        if args.command == "train":
            cmd_train(args, args.model)
        elif args.command == "evaluate":
            cmd_evaluate(args)
        elif args.command == "baseline":
            cmd_baseline(args, args.model)
        elif args.command == "prepare-data":
            from .data import prepare_data

            prepare_data(args.data_dir)
        elif args.command == "demo":
            from .demo import demo

            demo(args)
        elif args.command == "models":
            from .models import list_models

            print(list_models())
        elif args.command in ("sweep", "report"):
            from .study import report, sweep

            {"sweep": sweep, "report": report}[args.command].main(args)

    run(go)


def script(model: str, task: str, action: str = "train") -> None:
    """Entry point of the per-model scripts: `<model folder>/<name>.py`."""
    if action == "evaluate":
        parser = argparse.ArgumentParser(description=f"Evaluate a trained {model} {task} experiment.")
        _evaluate_parser(parser)
        args = parser.parse_args()
        run(lambda: cmd_evaluate(args))
        return
    if action == "baseline":
        parser = argparse.ArgumentParser(description=f"Zero-/few-shot baseline of the {model} base model "
                                                     "(no adapter). Every config key is a flag.")
        _baseline_parser(parser, _help_defaults(model, task, "baseline"))
        args = parser.parse_args()
        run(lambda: cmd_baseline(args, model, task))
        return
    parser = argparse.ArgumentParser(description=f"Fine-tune {model} on the {task} task and evaluate it. "
                                                 "Every config key is a flag; defaults shown are this folder's.")
    _train_parser(parser, _help_defaults(model, task, "train"))
    args = parser.parse_args()
    run(lambda: cmd_train(args, model, task))
