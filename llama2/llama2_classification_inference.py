"""Evaluate a trained Llama 2 classification experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("llama2", "classification", "evaluate")
