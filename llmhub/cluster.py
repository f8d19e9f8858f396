"""Connecting to Ray: shared by sweeps (`llmhub sweep --backend ray`) and inference/ray_serve.py."""
from __future__ import annotations

from .errors import HubError


def init_ray(address: str | None = None, init_kwargs: dict | None = None):
    """Connect to a Ray cluster (or start a local one); workers import the installed package."""
    try:
        import ray
    except ImportError:
        raise HubError("--backend ray needs the ray package (pip install 'ray[default]')") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
                 **(init_kwargs or {}))
    return ray
