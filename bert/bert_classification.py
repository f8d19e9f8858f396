"""Fine-tune an encoder baseline (default bert-base-uncased, full fine-tuning) as a 20 Newsgroups
sequence classifier, then evaluate it.

--pretrained_ckpt distilbert for DistilBERT, minilm-l6 for the offline all-MiniLM-L6-v2;
--method lora for LoRA instead of full fine-tuning. Run with --help for every flag.
"""

from llmhub.cli import script

script("bert", "classification")
