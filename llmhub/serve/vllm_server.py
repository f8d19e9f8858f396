"""Serve an experiment with vLLM's OpenAI-compatible server, from vLLM's own virtualenv.

  make -C inference/vllm venv                                   # once: inference/vllm/.venv
  python inference/vllm/launch.py --experiment_dir experiments/llama2-summ --port 8001
  python inference/vllm/launch.py --experiment_dir experiments/llama2-summ --merged_dir merged/llama2-summ
  python inference/vllm/launch.py --model merged/llama2-summ --port 8001
  python inference/vllm/launch.py --experiment_dir experiments/a --adapter b=experiments/b   # two adapters

An experiment trained with an adapter is served as its base model plus the adapter, unmerged
(`--enable-lora`, rank limit read from the adapter's adapter_config.json), or with `--merged_dir
DIR` merged into DIR first (much faster on a CPU), under the model name `--name` (default: the
experiment folder's name); the base answers as the base's folder name. A
fully fine-tuned experiment, a merged folder (inference/merge.py) or a plain model folder is served
as is. `--adapter NAME=EXP_DIR` (repeatable) adds more adapters trained on the same base, as our
server's flag of the same name does. Requests: POST /v1/completions {"model": NAME, "prompt": rendered
prompt, "max_tokens": n}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from .. import foreign_env
from ..errors import HubError, run
from ..vllm_eval import VENV_PYTHON, cpu_preload

# vLLM sizes its LoRA buffers for one of these ranks; an adapter's rank is rounded up to the next.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--experiment_dir", help="a trained experiment (config.yaml + model/)")
    src.add_argument("--model", help="a merged or plain model folder, or a registry name")
    p.add_argument("--name", help="model name clients ask for (default: the folder's name)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=EXP_DIR",
                   help="one more LoRA experiment on the same base, served as NAME (repeatable)")
    p.add_argument("--merged_dir", help="merge the experiment's adapter into this folder first (inference/merge.py; "
                                        "replaces an earlier merge there) and serve that: vLLM's LoRA kernels are "
                                        "slow on a CPU")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32", "float16"),
                   help="auto: on a CPU what `--torch_dtype auto` picks there (bf16 where it is native and "
                        "faster, else fp32), on a GPU vLLM's own choice (default: %(default)s)")
    p.add_argument("--max_model_len", type=int, default=2048)
    p.add_argument("--kv_cache_gib", default=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
                   help="KV cache in GiB (VLLM_CPU_KVCACHE_SPACE) (default: %(default)s)")
    p.add_argument("--enforce_eager", action="store_true",
                   help="skip vLLM's torch.compile warm-up: a start-up of seconds instead of minutes on a CPU, "
                        "for tests and quick checks (the compiled model may decode faster)")
    p.add_argument("--no_prefix_caching", action="store_true",
                   help="don't reuse the KV cache of prompt prefixes seen before (benchmarks that repeat prompts)")
    p.add_argument("--python", default=str(VENV_PYTHON),
                   help="the python of an environment with vLLM (default: inference/vllm/.venv, from make venv)")
    return p


def lora_rank(adapter_dir: Path) -> int:
    r = json.loads((adapter_dir / "adapter_config.json").read_text()).get("r")
    if not isinstance(r, int) or r < 1:
        raise HubError(f"{adapter_dir / 'adapter_config.json'}: field 'r' must be a positive integer, got {r!r}")
    bigger = [k for k in LORA_RANKS if k >= r]
    if not bigger:
        raise HubError(f"{adapter_dir}: LoRA rank {r} is above vLLM's largest ({LORA_RANKS[-1]}); merge it instead")
    return bigger[0]


def lora_flags(base: str, served: list[tuple[str, Path]], specs: list[str]) -> list[str]:
    """vLLM's LoRA flags for the experiments `served` plus every NAME=EXP_DIR of `specs`, all of
    which must be adapters of `base`; the rank limit fits the largest adapter."""
    from .catalog import base_of, parse_adapter

    for spec in specs:
        name, exp = parse_adapter(spec)
        if not (exp / "config.yaml").is_file():
            raise HubError(f"--adapter {spec}: {exp} is not an experiment directory (no config.yaml)")
        if base_of(exp) != base:
            raise HubError(f"--adapter {spec}: trained on {base_of(exp)}, not on the served base {base}")
        served.append((name, exp))
    if not served:
        return []
    rank = max(lora_rank(exp / "model") for _, exp in served)
    # one --lora-modules with every module: vLLM keeps only the last of repeated flags
    return ["--enable-lora", "--max-lora-rank", str(rank), "--max-loras", str(len(served)), "--lora-modules",
            *(f"{name}={(exp / 'model').resolve()}" for name, exp in served)]


def command(args) -> list[str]:
    """The vLLM command line for an experiment or a model folder."""
    from ..models import load_config, resolve_dtype, resolve_path

    dtype = args.dtype
    if dtype == "auto" and not torch.cuda.is_available():
        dtype = str(resolve_dtype("auto")).removeprefix("torch.")
    cmd = [args.python, "-m", "vllm.entrypoints.openai.api_server", "--host", args.host,
           "--port", str(args.port), "--dtype", dtype, "--max-model-len", str(args.max_model_len)]
    if args.no_prefix_caching:
        cmd.append("--no-enable-prefix-caching")
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.model:
        load_config(args.model)  # an unknown name is one line here, not vLLM's traceback
        folder = Path(resolve_path(args.model))
        cmd += ["--model", str(folder), "--served-model-name", args.name or folder.name]
        return cmd + lora_flags(str(folder.resolve()), [], args.adapter)
    exp = Path(args.experiment_dir)
    if not (exp / "config.yaml").is_file():
        raise HubError(f"{exp} is not an experiment directory (no config.yaml)")
    model_dir = exp / "model"
    name = args.name or exp.resolve().name
    if args.merged_dir:
        return cmd + ["--model", str(Path(args.merged_dir).resolve()), "--served-model-name", name]
    if (model_dir / "adapter_config.json").is_file():
        from .catalog import base_of

        folder = Path(base_of(exp))
        return cmd + ["--model", str(folder), "--served-model-name", folder.name] + \
            lora_flags(str(folder), [(name, exp)], args.adapter)
    if args.adapter:
        raise HubError(f"--adapter needs a base model: {exp} is fully fine-tuned (no adapter_config.json)")
    if (model_dir / "config.json").is_file():
        return cmd + ["--model", str(model_dir.resolve()), "--served-model-name", name]
    raise HubError(f"{model_dir} holds neither an adapter (adapter_config.json) nor a model (config.json)")


def merge_first(args) -> None:
    """--merged_dir: the experiment's adapter merged into that folder, which may hold only an earlier merge."""
    from ..adapters import merge

    exp, out = Path(args.experiment_dir or ""), Path(args.merged_dir)
    if not args.experiment_dir or args.adapter or not (exp / "model" / "adapter_config.json").is_file():
        raise HubError("--merged_dir needs --experiment_dir of an adapter experiment and no --adapter")
    if out.exists() and any(out.iterdir()) and not (out / "merge.json").is_file():
        raise HubError(f"--merged_dir {out} holds files that are not a merged model (no merge.json); "
                       "give an empty or new folder")
    print(f"merging {exp} into {out}", file=sys.stderr, flush=True)
    merge(exp, out, overwrite=True)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)

    def go():
        if not Path(args.python).is_file():
            raise HubError(f"no python at {args.python}: create vLLM's virtualenv with `make -C inference/vllm venv` "
                           "or pass --python")
        if args.merged_dir:
            merge_first(args)
        cmd = command(args)
        print(" ".join(cmd), file=sys.stderr, flush=True)
        if "--enable-lora" in cmd and not torch.cuda.is_available():
            print("warning: vLLM's LoRA kernels are slow on a CPU (16 SAMSum prompts: 95.9 s unmerged vs 2.5 s "
                  "merged); to serve one adapter, pass --merged_dir", file=sys.stderr)
        env = {**foreign_env(), "VLLM_CPU_KVCACHE_SPACE": str(args.kv_cache_gib), **cpu_preload(Path(args.python))}
        os.execve(cmd[0], cmd, env)

    run(go)


if __name__ == "__main__":
    main()
