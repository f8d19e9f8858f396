"""Fine-tune RedPajama-INCITE (default togethercomputer/RedPajama-INCITE-Base-3B-v1, QLoRA) on the classification task, then evaluate it.

LoRA targets default to the fused-attention and MLP layers of the architecture (query_key_value,
dense, dense_h_to_4h, dense_4h_to_h). Run with --help for every flag; defaults are this folder's
recipe (llmhub/config_hub/redpajama/recipe.yaml). Runs unchanged under `accelerate launch` (see configs/accelerate/).
"""

from llmhub.cli import script

script("redpajama", "classification")
