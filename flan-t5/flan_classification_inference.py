"""Evaluate a trained Flan-T5 classification experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("flan-t5", "classification", "evaluate")
