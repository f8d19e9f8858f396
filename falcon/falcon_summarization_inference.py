"""Evaluate a trained Falcon summarization experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("falcon", "summarization", "evaluate")
