"""Zero-shot or few-shot baseline of the Llama 2 base model (default meta-llama/Llama-2-7b-hf), no adapter.

--task classification|summarization, --prompt zero-shot|few-shot; writes an experiment directory
(config.yaml, predictions.jsonl, results.json). Offline, --pretrained_ckpt smollm2-135m runs the real
SmolLM2-135M-Instruct instead. Run with --help for every flag.
"""

from llmhub.cli import script

script("llama2", "classification", "baseline")
