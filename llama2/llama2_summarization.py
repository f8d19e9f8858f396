"""Fine-tune Llama 2 (default meta-llama/Llama-2-7b-hf, QLoRA) on the summarization task, then evaluate it.

Offline, --pretrained_ckpt smollm2-135m runs the real SmolLM2-135M (Llama architecture) instead.
Run with --help for every flag; defaults are this folder's recipe (llmhub/recipes.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmhub.cli import script  # noqa: E402

script("llama2", "summarization")
