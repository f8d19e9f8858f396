"""Evaluate a trained Falcon classification experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("falcon", "classification", "evaluate")
