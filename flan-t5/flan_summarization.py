"""Fine-tune Flan-T5 (default google/flan-t5-large, LoRA) on the summarization task, then evaluate it.

Run with --help for every flag; defaults are this folder's recipe (llmhub/recipes.py).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmhub.cli import script  # noqa: E402

script("flan-t5", "summarization")
