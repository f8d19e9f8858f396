"""Evaluate a trained RedPajama-INCITE summarization experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("redpajama", "summarization", "evaluate")
