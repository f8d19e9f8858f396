"""Evaluate a trained RedPajama-INCITE classification experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("redpajama", "classification", "evaluate")
