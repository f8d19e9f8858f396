"""Fine-tune Flan-T5 (default google/flan-t5-large, LoRA) on the summarization task, then evaluate it.

Run with --help for every flag; defaults are this folder's recipe (llmhub/config_hub/flan-t5/recipe.yaml).
"""

from llmhub.cli import script

script("flan-t5", "summarization")
