"""llmhub: parameter-efficient fine-tuning, evaluation and serving of open LLMs."""
import os

__version__ = "0.1.0"

# oneDNN, and PyTorch's ideep layer above it, each keep up to 1,024 built matmul kernels, keyed by
# shape. Training and generation meet a new sequence length at nearly every batch, and each new
# length builds ~25 kernels (a SmolLM2 step: the projections and the attention blocks), so resident
# memory grew by ~17-20 MB per new length (SmolLM2-135M and Qwen2.5-1.5B alike) until the caches
# were full, about 40 lengths in: most of a GB a run held for nothing. A step reuses only its own
# kernels, so 64 of each keep a step's and the previous one's (benchmarks/bench_kernel_cache.py
# measures memory and speed against 1,024). Set on import, before torch builds its first kernel; a
# value the caller set wins, and other engines' processes (vLLM, `transformers serve`) get the
# caller's environment as it was (`foreign_env`).
KERNEL_CACHE_BOUNDS = {var: "64" for var in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
                       if var not in os.environ}
os.environ.update(KERNEL_CACHE_BOUNDS)


def foreign_env() -> dict:
    """This process's environment without the kernel-cache bounds llmhub set (for other engines)."""
    return {k: v for k, v in os.environ.items() if k not in KERNEL_CACHE_BOUNDS}
