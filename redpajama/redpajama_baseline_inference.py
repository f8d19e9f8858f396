"""Zero-shot or few-shot baseline of the RedPajama-INCITE base model (default togethercomputer/RedPajama-INCITE-Instruct-3B-v1), no adapter.

--task classification|summarization, --prompt zero-shot|few-shot; writes an experiment directory
(config.yaml, predictions.jsonl, results.json). Run with --help for every flag.
"""

from llmhub.cli import script

script("redpajama", "classification", "baseline")
