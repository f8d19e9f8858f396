"""A run's resident memory does not grow with every new sequence length it meets.

oneDNN and PyTorch's ideep layer keep the matmul kernels they build, keyed by shape, up to 1,024
each; importing llmhub bounds both caches (llmhub/__init__.py). Measured in fresh processes on the
real SmolLM2-135M: bf16 LoRA forward + backward at 12 new lengths, resident memory after each
(after gc and malloc_trim), once with llmhub's bounds and once with the libraries' own 1,024.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmhub import KERNEL_CACHE_BOUNDS, models

ROOT = Path(__file__).resolve().parents[2]
CACHE_VARS = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
SCRIPT = r"""
import os
import llmhub, torch
from llmhub import methods, models
from llmhub.config import RunConfig
from llmhub.results import release_heap

def rss_mb():
    release_heap()
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

torch.set_num_threads(1)
path = models.resolve_path("smollm2-135m")
model = methods.wrap(models.load_base_model(path, "causal", torch.bfloat16), RunConfig().method, "causal")
g = torch.Generator().manual_seed(0)
def step(n):
    ids = torch.randint(100, 1000, (2, n), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, labels=ids).loss.backward()
step(31); step(33)  # one-off allocations
start = rss_mb()
lengths = range(40, 100, 5)
for n in lengths:
    step(n)
print(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), os.environ.get("LRU_CACHE_CAPACITY"),
      (rss_mb() - start) / len(lengths))
"""


def growth_per_length(**cache_env) -> tuple[str, str, float]:
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS} | cache_env
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    onednn, ideep, mb = out.stdout.split()[-3:]
    return onednn, ideep, float(mb)


def test_new_sequence_lengths_do_not_pile_up_kernels():
    if not models.installed("smollm2-135m"):
        pytest.skip("smollm2-135m is not installed (make test installs it)")
    *bounds, bounded = growth_per_length()
    *_, unbounded = growth_per_length(**{v: "1024" for v in CACHE_VARS})
    assert bounds == ["64", "64"]  # set by importing llmhub, as the caller had not set them
    # measured: ~1.7 MB per new length bounded, ~17.5 MB with the libraries' own capacity
    assert bounded < 6 and unbounded > 10 and unbounded > 3 * bounded, (bounded, unbounded)


def test_a_caller_setting_wins_and_other_engines_get_the_callers_environment():
    code = ("import os; os.environ['LRU_CACHE_CAPACITY'] = '7'; import llmhub; "
            "print(os.environ['LRU_CACHE_CAPACITY'], os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], "
            "sorted(llmhub.KERNEL_CACHE_BOUNDS), 'ONEDNN_PRIMITIVE_CACHE_CAPACITY' in llmhub.foreign_env(), "
            "llmhub.foreign_env()['LRU_CACHE_CAPACITY'])")
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["7", "64", "['ONEDNN_PRIMITIVE_CACHE_CAPACITY']", "False", "7"], out
    assert set(KERNEL_CACHE_BOUNDS) <= set(CACHE_VARS)
