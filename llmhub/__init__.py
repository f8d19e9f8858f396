"""llmhub: parameter-efficient fine-tuning, evaluation and serving of open LLMs."""

__version__ = "0.1.0"
