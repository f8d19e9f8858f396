"""Serve an experiment directory (or a plain / merged model) over HTTP with FastAPI and uvicorn.

  python inference/server.py --experiment_dir experiments/llama2-summ --mode batched --port 8000
  python inference/server.py --model smollm2-135m --task summarization --mode naive
  python inference/server.py --experiment_dir experiments/a --adapter b=experiments/b   # two adapters, one base
  python inference/server.py --experiment_dir experiments/a --engine vllm --vllm_url http://127.0.0.1:8001

Every flag can also come from an environment variable LLMHUB_<FLAG>, e.g. LLMHUB_EXPERIMENT_DIR,
LLMHUB_MODE=naive, LLMHUB_PORT=8080 (flags win). POST /predict takes the raw input and applies the
experiment's fine-tuning template; POST /generate takes a full prompt (TGI's API); /v1/* is
OpenAI's API. See inference/README.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import HubError, run

MODES = ("naive", "batched", "continuous")
ENGINES = ("local", "vllm")


def _env(name: str, default=None):
    return os.environ.get(f"LLMHUB_{name.upper()}", default)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to serve (exactly one of --experiment_dir / --model)")
    src.add_argument("--experiment_dir", default=_env("experiment_dir"),
                     help="a trained experiment (config.yaml + model/): base + adapter, or a full model")
    src.add_argument("--model", default=_env("model"),
                     help="a model folder, registry name (smollm2-135m) or merged model, served with "
                          "the fine-tuning template of --task")
    src.add_argument("--task", default=_env("task"),
                     help="with --model: classification | summarization | dialogsum (default: the merged "
                          "model's llmhub.yaml, else summarization)")
    src.add_argument("--max_source_length", type=int, default=_env("max_source_length"),
                     help="tokens of template + input (default: the experiment's)")
    src.add_argument("--max_new_tokens", type=int, default=_env("max_new_tokens"),
                     help="default tokens generated per request (default: the experiment's or the task's)")
    src.add_argument("--adapter", action="append", default=[], metavar="NAME=EXP_DIR",
                     help="one more LoRA experiment on the same base, served as model NAME (repeatable)")
    eng = p.add_argument_group("engine")
    eng.add_argument("--engine", default=_env("engine", "local"),
                     help="local (the model in this process) | vllm (forward generation to --vllm_url; "
                          "start vLLM with inference/vllm/launch.py) (default: %(default)s)")
    eng.add_argument("--vllm_url", default=_env("vllm_url"), help="vllm: the vLLM server, e.g. http://127.0.0.1:8001")
    eng.add_argument("--vllm_timeout", type=float, default=_env("vllm_timeout", "600"),
                     help="vllm: seconds one request may take upstream (default: %(default)s)")
    b = p.add_argument_group("batching")
    b.add_argument("--mode", default=_env("mode", "batched"), help="naive (one request per forward pass, "
                   "like the original server) | batched (micro-batches) | continuous (a request joins the running "
                   "batch at the next decoding step; greedy, one adapter, causal models) (default: %(default)s)")
    b.add_argument("--kv_cache_tokens", type=int, default=_env("kv_cache_tokens", "16384"),
                   help="continuous: tokens the paged KV cache holds, all requests together (default: %(default)s)")
    b.add_argument("--max_batch_size", type=int, default=_env("max_batch_size", "16"),
                   help="batched: most requests per forward pass; vllm engine: most requests in flight "
                        "upstream (default: %(default)s)")
    b.add_argument("--max_wait_ms", type=float, default=_env("max_wait_ms", "50"),
                   help="batched: ms the oldest request waits for companions (default: %(default)s)")
    b.add_argument("--max_queue", type=int, default=_env("max_queue", "128"),
                   help="requests allowed to wait; beyond it the answer is 503 + Retry-After (default: %(default)s)")
    lim = p.add_argument_group("per-request limits")
    lim.add_argument("--max_input_tokens", type=int, default=_env("max_input_tokens", "2048"),
                     help="longest /predict input in tokens, else 413 (default: %(default)s)")
    lim.add_argument("--max_new_tokens_limit", type=int, default=_env("max_new_tokens_limit", "256"),
                     help="largest max_new_tokens a request may ask for, else 422 (default: %(default)s)")
    net = p.add_argument_group("process")
    net.add_argument("--host", default=_env("host", "127.0.0.1"), help="bind address (default: %(default)s)")
    net.add_argument("--port", type=int, default=_env("port", "8000"), help="(default: %(default)s)")
    net.add_argument("--threads", type=int, default=_env("threads", "2"),
                     help="torch CPU threads; one per physical core (default: %(default)s)")
    net.add_argument("--log_level", default=_env("log_level", "warning"), help="uvicorn log level")
    net.add_argument("--api_key", default=_env("api_key"),
                     help="ask every request but /health for 'Authorization: Bearer KEY' (default: none; "
                          "prefer LLMHUB_API_KEY, which does not show in the process list)")
    return p


def overrides(args) -> dict:
    over = {"task": args.task,
            "max_source_length": args.max_source_length, "max_new_tokens": args.max_new_tokens}
    return {k: v for k, v in over.items() if v is not None}


def check(args) -> None:
    if args.engine not in ENGINES:
        raise HubError(f"unknown engine '{args.engine}'; allowed: {', '.join(ENGINES)}")
    if (args.engine == "vllm") != bool(args.vllm_url):
        raise HubError("--vllm_url goes with --engine vllm, and --engine vllm needs --vllm_url")
    if args.vllm_url and not args.vllm_url.startswith(("http://", "https://")):
        raise HubError(f"--vllm_url must start with http:// or https://, got '{args.vllm_url}'")
    if args.mode not in MODES:
        raise HubError(f"unknown mode '{args.mode}'; allowed: {', '.join(MODES)}")
    if args.mode == "continuous" and (args.engine != "local" or args.adapter):
        raise HubError("--mode continuous runs the local engine with one adapter (vLLM batches continuously "
                       "itself; --adapter needs --mode batched)")
    for name in ("max_batch_size", "max_queue", "max_input_tokens", "max_new_tokens_limit", "threads",
                 "kv_cache_tokens"):
        if getattr(args, name) < 1:
            raise HubError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_wait_ms < 0:
        raise HubError(f"--max_wait_ms must be >= 0, got {args.max_wait_ms}")
    from .catalog import parse_adapter

    names = [parse_adapter(spec)[0] for spec in args.adapter]
    if len(set(names)) < len(names):
        raise HubError(f"--adapter names must be unique, got {', '.join(names)}: a model name is given twice")
    if args.experiment_dir and args.task:
        raise HubError("--task goes with --model; an experiment directory knows its task")


def load_predictor(predictor_cls, args, over: dict):
    """The model and every adapter, as a catalog of names, or one `error:` line: a truncated adapter
    or weights file is a bad input, not a crash. The vllm engine loads prompt rules only."""
    from . import catalog

    source = args.experiment_dir or args.model
    weights = args.engine == "local"
    try:
        predictor = predictor_cls.load(args.experiment_dir, args.model, over, weights=weights)
        return predictor, catalog.build(predictor, args.experiment_dir, args.model, args.adapter, over, weights)
    except HubError:
        raise
    except Exception as e:  # SafetensorError, OSError, a cut pickle's RuntimeError/EOFError, ...
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise HubError(f"cannot load the model of {source}: {type(e).__name__}: {first} "
                       "(is a weights or adapter file truncated? copy it again or retrain)") from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        import torch
        import uvicorn

        from .app import BatchSettings, create_app
        from .engines import VllmEngine
        from .prometheus import ServerMetrics
        from .schema import Limits
        from .predictor import Predictor

        check(args)
        torch.set_num_threads(args.threads)
        over = overrides(args)
        if args.model and not args.task:  # a merged model's llmhub.yaml knows its task
            from ..models import resolve_path
            from ..adapters import MERGED_CONFIG

            if not (Path(resolve_path(args.model)) / MERGED_CONFIG).is_file():
                over["task"] = "summarization"
        predictor, catalog = load_predictor(Predictor, args, over)
        settings = BatchSettings(args.mode, args.max_batch_size, args.max_wait_ms, args.max_queue)
        limits = Limits(args.max_input_tokens, args.max_new_tokens_limit)
        metrics = ServerMetrics()
        engine = None
        if args.mode == "continuous":
            from .continuous import ContinuousEngine

            engine = ContinuousEngine(predictor, args.max_batch_size, args.max_queue, args.kv_cache_tokens,
                                      metrics.on_batch, metrics.cancelled.inc)
        if args.engine == "vllm":
            if predictor.family == "encoder":
                raise HubError("--engine vllm serves generative models; an encoder classifier runs with --engine local")
            engine = VllmEngine(args.vllm_url, settings.effective()[0], args.max_queue, metrics.on_batch, args.vllm_timeout)
        app = create_app(predictor, settings, limits, api_key=args.api_key, catalog=catalog, engine=engine,
                         metrics=metrics)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        print(f"serving {', '.join(catalog.routes)} ({predictor.family}, {predictor.kind}) engine={args.engine} "
              f"mode={args.mode} on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)

    run(go)


if __name__ == "__main__":
    main()
