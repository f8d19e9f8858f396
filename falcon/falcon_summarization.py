"""Fine-tune Falcon (default tiiuae/falcon-7b, QLoRA) on the summarization task, then evaluate it.

LoRA targets default to the fused-attention and MLP layers of the architecture (query_key_value,
dense, dense_h_to_4h, dense_4h_to_h). Run with --help for every flag; defaults are this folder's
recipe (llmhub/config_hub/falcon/recipe.yaml). Runs unchanged under `accelerate launch` (see configs/accelerate/).
"""

from llmhub.cli import script

script("falcon", "summarization")
