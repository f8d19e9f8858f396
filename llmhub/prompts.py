"""Every prompt, in one place: training, evaluation, baselines and the server render through here.

Styles: "t5" (Flan-T5 instructions), "causal" (the seeds' "### Sentence: ... ### Class:" template)
and "plain" (encoders see the raw text). Modes: "finetune" (the template the adapter is trained
on), "zero-shot" and "few-shot" (instructions for a base model with no adapter).

Formats: "plain" renders the style's template as text; "chat" renders the same content as chat
turns through the tokenizer's own chat template (`apply_chat_template`, generation prompt added;
few-shot examples become user/assistant turns), which is how instruct models were trained to be
asked; "auto" is chat for zero-/few-shot prompts of models whose tokenizer has a chat template and
plain otherwise, so fine-tuning keeps the plain template unless asked. A user template
(`prompt_template`, containing "{input}") replaces the style's template everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import HubError

STYLES = ("t5", "causal", "plain")
MODES = ("finetune", "zero-shot", "few-shot")
FORMATS = ("auto", "plain", "chat")

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


def check_template(template: str) -> str:
    """A user template must hold exactly one "{input}" and no other {field}."""
    import string

    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise HubError(f"prompt_template is not a valid template ({e}); write literal braces as {{{{ }}}}") from None
    if fields != ["input"]:
        raise HubError(f"prompt_template must contain {{input}} exactly once and no other {{field}}, "
                       f"got fields {fields}")
    return template


def load_template(value: str | None) -> str | None:
    """A `prompt_template` setting as template text: the text itself (it holds "{input}"), or the
    path of a file holding it; the text is what config.yaml keeps, so a run never depends on the file."""
    if not value:
        return None
    if "{input}" not in value:
        if not Path(value).is_file():
            raise HubError(f"prompt_template must contain {{input}} or name a file holding such a template; "
                           f"got {value!r}, which is neither")
        value = Path(value).read_text(encoding="utf-8")
    return check_template(value)


@dataclass(frozen=True)
class PromptFormat:
    """How one run renders prompts: its template (None: the style's) and whether through the
    tokenizer's chat template. Built by `for_run` from the run's config; training, evaluation,
    baselines and the server all render through it."""
    template: str | None = None
    chat: bool = False

    def render(self, style: str, kind: str, text: str, mode: str = "finetune", labels: list[str] | None = None,
               examples: list[dict] | None = None, tokenizer=None) -> str:
        return render(style, kind, text, mode, labels, examples, self.template, tokenizer if self.chat else None)


def for_run(data_cfg, tokenizer, mode: str = "finetune") -> PromptFormat:
    """The PromptFormat of a run's `prompt_format` and `prompt_template` for this tokenizer and mode."""
    return PromptFormat(load_template(data_cfg.prompt_template), use_chat(data_cfg.prompt_format, tokenizer, mode))


def use_chat(prompt_format: str, tokenizer, mode: str) -> bool:
    """Whether prompts go through the tokenizer's chat template (see the module docstring)."""
    if prompt_format not in FORMATS:
        raise HubError(f"unknown prompt_format '{prompt_format}'; allowed: {', '.join(FORMATS)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_chat:
        raise HubError("prompt_format 'chat' needs a tokenizer with a chat template; this one has none "
                       "(use plain or auto)")
    return prompt_format == "chat" or (prompt_format == "auto" and has_chat and mode != "finetune")


def render(style: str, kind: str, text: str, mode: str = "finetune",
           labels: list[str] | None = None, examples: list[dict] | None = None,
           template: str | None = None, chat_tokenizer=None) -> str:
    """The prompt for one input; the model's answer is expected right after it. With
    `chat_tokenizer`, the same content is rendered through that tokenizer's chat template."""
    if style not in STYLES:
        raise HubError(f"unknown prompt style '{style}'; allowed: {', '.join(STYLES)}")
    if mode not in MODES:
        raise HubError(f"unknown prompt mode '{mode}'; allowed: {', '.join(MODES)}")
    if (style, kind) not in _TEMPLATES:
        raise HubError(f"no prompt for task kind '{kind}'; allowed: classification, generation")
    template = check_template(template) if template else _TEMPLATES[(style, kind)]
    if chat_tokenizer is not None:
        messages = chat_messages(kind, text, mode, labels, examples, template)
        return chat_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = template.format(input=text)
    if mode == "finetune":
        return prompt
    head = _INSTRUCTIONS[kind].format(labels=", ".join(labels or []))
    shots = ""
    if mode == "few-shot":
        shots = "".join(template.format(input=ex["input"]) + ex["target"] + "\n\n" for ex in examples or [])
    return head + shots + prompt


def chat_messages(kind: str, text: str, mode: str, labels: list[str] | None = None,
                  examples: list[dict] | None = None, template: str = "{input}") -> list[dict]:
    """Chat turns for one input: the instructions as a system turn (zero-/few-shot), each few-shot
    example as a user turn answered by an assistant turn, then the input as the last user turn."""
    turns = []
    if mode != "finetune":
        turns.append({"role": "system", "content": _INSTRUCTIONS[kind].format(labels=", ".join(labels or [])).strip()})
    for ex in (examples or []) if mode == "few-shot" else []:
        turns += [{"role": "user", "content": template.format(input=ex["input"]).strip()},
                  {"role": "assistant", "content": ex["target"]}]
    turns.append({"role": "user", "content": template.format(input=text).strip()})
    return turns


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
