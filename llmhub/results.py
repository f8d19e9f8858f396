"""Experiment directories: provenance, cost, and the results schema (files are written by io.py).

results.json = {"metrics", "config", "train", "eval", "provenance", ...}; predictions.jsonl has one
{"id", "reference", "prediction"} row per test example.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .io import atomic_dir, atomic_write_bytes, atomic_write_text, sha256_file, write_json, write_jsonl  # noqa: F401 (callers before io.py)

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
            "rouge_score", "scikit-learn")


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# The CPU flags that decide how fast bf16 runs here (the same cloud machine type has been a Xeon
# with AMX and an EPYC without it).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> tuple[str | None, list[str]]:
    """lscpu's model name and which of BF16_FLAGS the CPU has (Linux; None and [] elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, []
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return name, [f for f in BF16_FLAGS if f in flags]


def hardware() -> dict:
    import torch

    name, flags = cpu_model()
    info = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
            "cpu_model": name, "cpu_bf16_flags": flags,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    else:
        info["gpu"] = None
    return info


def provenance(seed: int, torch_dtype: str = "auto") -> dict:
    """Where a result came from; `compute_dtype` is what `torch_dtype` resolved to on this machine."""
    from .models import resolve_dtype

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    # Dirty = changed code or config; generated outputs (results, plots, README tables) do not count,
    # so a sweep that rewrites its own sweep.json or a report run beside it keeps runs clean.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)results",
                  ":(top,exclude)assets", ":(top,exclude,glob)**/*.md")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None,
            "packages": versions, "python": platform.python_version(), "hardware": hardware(), "seed": seed,
            "compute_dtype": str(resolve_dtype(torch_dtype)).removeprefix("torch.")}


# 2: provenance names the data files and model weights it read, by sha256 (1: git, packages, hardware).
SCHEMA_VERSION = 2
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
def shareable_path(path: Path) -> str:
    """A path fit for committed results: from site-packages/ for a model installed as a package,
    relative to the working directory inside it, else with the user's home as ~."""
    p = path.resolve()
    if "site-packages" in p.parts:
        return str(Path(*p.parts[p.parts.index("site-packages"):]))
    if p.is_relative_to(Path.cwd()):
        return str(p.relative_to(Path.cwd()))
    return str(p).replace(str(Path.home()), "~", 1)


def model_provenance(model_path: str) -> dict:
    """The resolved model: a local folder's weight files by sha256, or a hub id and its cached revision."""
    path = Path(model_path)
    if path.is_dir():
        weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        return {"path": shareable_path(path), "weights_sha256": {p.name: sha256_file(p) for p in weights}}
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{model_path.replace('/', '--')}" / "refs" / "main"
    return {"hub_id": model_path, "revision": ref.read_text().strip() if ref.is_file() else None}


def inputs_provenance(data: dict, model_path: str) -> dict:
    """What a run read, checkable later: the data (data.data_provenance: each file's sha256, or a
    dataset's fingerprints) and the model's weights or revision."""
    return {**data, "model": model_provenance(model_path)}


def build_record(cfg, splits: dict, model_path: str, mode: str, metrics: dict, seconds: float, examples: int,
                 **sections) -> dict:
    """The one results.json record of an evaluated run, fine-tuned (mode "finetune") or a baseline
    ("zero-shot" / "few-shot"): metrics, resolved config, the run's own `sections` (train and
    validation; or train None and prompts), evaluation speed, and provenance with the hashes of the
    data files and model weights read."""
    from .data import data_provenance

    read = inputs_provenance(data_provenance(cfg.data, splits), model_path)
    return {"schema_version": SCHEMA_VERSION, "metrics": metrics, "config": cfg.to_dict(), "mode": mode, **sections,
            "eval": {"seconds": seconds, "examples": examples,
                     "examples_per_second": examples / seconds if seconds else None},
            "provenance": {**provenance(cfg.train.seed, cfg.model.torch_dtype), **read}}


def cost_usd(seconds: float, dollars_per_hour: float) -> float:
    return seconds / 3600 * dollars_per_hour


def reset_peak_memory() -> None:
    """Start a new peak: the peak of a run, not of the process (a sweep runs many in one process).
    On Linux writing 5 to /proc/self/clear_refs resets the resident-set high-water mark (VmHWM)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak stays the process's


def peak_memory_mb() -> float:
    """Peak resident memory since the last reset_peak_memory (CPU; VmHWM on Linux, else the
    process's ru_maxrss) or peak allocated CUDA memory."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def release_heap() -> bool:
    """Collect garbage and hand freed malloc heap back to the OS (glibc's malloc_trim), so a child
    process such as vLLM's does not compete with heap a finished training step left resident (a
    sweep process held 7 GB RSS while vLLM evaluated its SmolLM2 run). False where malloc_trim is absent."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def read_results(path: str | Path) -> dict:
    """A finished run's results.json; a missing or unreadable file is one HubError line."""
    from .errors import HubError

    record = finished_record(path)
    if record is None:
        raise HubError(f"{path}: not a finished run's results (missing, or not JSON with 'metrics')")
    return record


def finished_record(path: str | Path) -> dict | None:
    """The results.json record if it parses and holds metrics (the mark of a finished run), else None."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("metrics"), dict) else None


def set_aside_corrupt(path: str | Path) -> bool:
    """Rename a results.json that exists but is not a finished record to results.json.corrupt (kept for
    a human to look at) so the run is redone; True if it did."""
    path = Path(path)
    if not path.exists() or finished_record(path) is not None:
        return False
    os.replace(path, path.with_name(path.name + ".corrupt"))
    print(f"warning: {path} is corrupt; kept as {path.name}.corrupt; the run is redone", file=sys.stderr)
    return True
