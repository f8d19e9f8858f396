"""Every prompt, in one place: training, evaluation, baselines and the server render through here.

Styles: "t5" (Flan-T5 instructions), "causal" (the seeds' "### Sentence: ... ### Class:" template)
and "plain" (encoders see the raw text). Modes: "finetune" (the template the adapter is trained
on), "zero-shot" and "few-shot" (instructions for a base model with no adapter).
"""
from __future__ import annotations

from .errors import HubError

STYLES = ("t5", "causal", "plain")
MODES = ("finetune", "zero-shot", "few-shot")

_TEMPLATES = {
    ("t5", "classification"): "Classify the following sentence into a category: {input} The answer is: ",
    ("t5", "generation"): "summarize: {input}",
    ("causal", "classification"): "### Sentence: {input}\n### Class: ",
    ("causal", "generation"): "### Dialogue: {input}\n### Summary: ",
    ("plain", "classification"): "{input}",
    ("plain", "generation"): "{input}",
}
_INSTRUCTIONS = {
    "classification": "Classify the sentence into exactly one of these categories: {labels}.\n"
                      "Answer with the category name only.\n\n",
    "generation": "Summarize the dialogue in one or two sentences.\n\n",
}


def render(style: str, kind: str, text: str, mode: str = "finetune",
           labels: list[str] | None = None, examples: list[dict] | None = None) -> str:
    """The prompt for one input; the model's answer is expected right after it."""
    if style not in STYLES:
        raise HubError(f"unknown prompt style '{style}'; allowed: {', '.join(STYLES)}")
    if mode not in MODES:
        raise HubError(f"unknown prompt mode '{mode}'; allowed: {', '.join(MODES)}")
    if (style, kind) not in _TEMPLATES:
        raise HubError(f"no prompt for task kind '{kind}'; allowed: classification, generation")
    template = _TEMPLATES[(style, kind)]
    prompt = template.format(input=text)
    if mode == "finetune":
        return prompt
    head = _INSTRUCTIONS[kind].format(labels=", ".join(labels or []))
    shots = ""
    if mode == "few-shot":
        shots = "".join(template.format(input=ex["input"]) + ex["target"] + "\n\n" for ex in examples or [])
    return head + shots + prompt


FEW_SHOT_SUMMARIES = 2  # few-shot summarization shows two example dialogues with their summaries


def select_examples(rows: list[dict], kind: str, labels: list[str], seed: int) -> list[dict]:
    """Few-shot examples from training rows, chosen deterministically: one per class, in label
    order, for classification; FEW_SHOT_SUMMARIES rows for generation.

    Rows are ordered by id first, so the choice depends only on the data and the seed, not on the
    order in which the split was read or sampled.
    """
    import random

    order = sorted(rows, key=lambda r: (r["id"], r["input"]))
    random.Random(seed).shuffle(order)
    if kind != "classification":
        if len(order) < FEW_SHOT_SUMMARIES:
            raise HubError(f"few-shot summarization needs {FEW_SHOT_SUMMARIES} training examples, "
                           f"the train split has {len(order)}")
        return order[:FEW_SHOT_SUMMARIES]
    first: dict[str, dict] = {}
    for row in order:
        first.setdefault(row["target"], row)
    missing = [label for label in labels if label not in first]
    if missing:
        raise HubError(f"few-shot classification needs one training example per class; none for: "
                       f"{', '.join(missing)}")
    return [first[label] for label in labels]


def clean_generation(text: str) -> str:
    """Cut a generated answer at the first sign of the model starting a new template block."""
    for stop in ("\n###", "###", "\n\n"):
        idx = text.find(stop)
        if idx > 0:
            text = text[:idx]
    return text.strip()
