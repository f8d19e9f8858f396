"""Zero-shot or few-shot baseline of the Falcon base model (default tiiuae/falcon-7b), no adapter.

--task classification|summarization, --prompt zero-shot|few-shot; writes an experiment directory
(config.yaml, predictions.jsonl, results.json). Run with --help for every flag.
"""

from llmhub.cli import script

script("falcon", "classification", "baseline")
