"""Prompt formats: plain templates, chat templates through the tokenizer, user templates."""
import pytest
from transformers import AutoTokenizer

from llmhub import prompts
from llmhub.errors import HubError

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture()
def plain_tok(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = None
    return tok


@pytest.fixture()
def chat_tok(tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = CHAT
    return tok


def test_auto_picks_chat_only_for_baselines_of_tokenizers_that_have_one(plain_tok, chat_tok):
    assert prompts.use_chat("auto", chat_tok, "zero-shot") and prompts.use_chat("auto", chat_tok, "few-shot")
    assert not prompts.use_chat("auto", chat_tok, "finetune")  # fine-tuning keeps the plain template
    assert not prompts.use_chat("auto", plain_tok, "zero-shot")
    assert prompts.use_chat("chat", chat_tok, "finetune") and not prompts.use_chat("plain", chat_tok, "zero-shot")
    with pytest.raises(HubError, match="needs a tokenizer with a chat template"):
        prompts.use_chat("chat", plain_tok, "zero-shot")
    with pytest.raises(HubError, match="allowed: auto, plain, chat"):
        prompts.use_chat("fancy", chat_tok, "zero-shot")


def test_few_shot_chat_uses_user_and_assistant_turns(chat_tok):
    examples = [{"input": "A: hi\nB: hello", "target": "They greet."},
                {"input": "A: bye", "target": "A leaves."}]
    text = prompts.render("causal", "generation", "C: lunch?", "few-shot", examples=examples,
                          chat_tokenizer=chat_tok)
    assert text.startswith("<|system|>Summarize the dialogue")
    assert "<|user|>### Dialogue: A: hi\nB: hello\n### Summary:\n<|assistant|>They greet.\n" in text
    assert "<|assistant|>A leaves.\n<|user|>### Dialogue: C: lunch?" in text
    assert text.endswith("<|assistant|>")  # the generation prompt


def test_user_template_replaces_the_style_template():
    t = "Conversation:\n{input}\nTL;DR:"
    assert prompts.render("causal", "generation", "A: hi", template=t) == "Conversation:\nA: hi\nTL;DR:"
    zero = prompts.render("t5", "classification", "text", "zero-shot", labels=["a", "b"], template=t)
    assert zero.endswith("Conversation:\ntext\nTL;DR:") and "a, b" in zero
    for bad in ("no field", "{input} and {input}", "{text}", "{input} {"):
        with pytest.raises(HubError, match="prompt_template"):
            prompts.render("causal", "generation", "x", template=bad)
