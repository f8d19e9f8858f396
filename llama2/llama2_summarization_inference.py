"""Evaluate a trained Llama 2 summarization experiment: writes predictions.jsonl and results.json into it."""

from llmhub.cli import script

script("llama2", "summarization", "evaluate")
