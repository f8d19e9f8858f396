"""Evaluate a trained encoder classification experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("bert", "classification", "evaluate")
