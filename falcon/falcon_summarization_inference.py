"""Evaluate a trained Falcon summarization experiment: writes predictions.jsonl and results.json into it."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmhub.cli import script  # noqa: E402

script("falcon", "summarization", "evaluate")
