"""Fold a trained adapter into its base model and save a standalone model folder for TGI / vLLM.

  python inference/merge.py --experiment_dir experiments/llama2-summ --output_dir merged/llama2-summ

`python inference/merge.py --help` tells more; the code is llmhub/adapters.py (evaluation through vLLM
merges with it too).
"""
from llmhub.adapters import main

if __name__ == "__main__":
    main()
