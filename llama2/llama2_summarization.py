"""Fine-tune Llama 2 (default meta-llama/Llama-2-7b-hf, QLoRA) on the summarization task, then evaluate it.

Offline, --pretrained_ckpt smollm2-135m runs the real SmolLM2-135M (Llama architecture) instead.
Run with --help for every flag; defaults are this folder's recipe (recipe.yaml beside this script).
"""

from llmhub.cli import script

script("llama2", "summarization")
