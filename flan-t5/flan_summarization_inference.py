"""Evaluate a trained Flan-T5 summarization experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("flan-t5", "summarization", "evaluate")
