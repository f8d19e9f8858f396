"""Batched generation pads each call on the side its family needs, whatever the tokenizer holds."""
import torch

from llmhub import models
from llmhub.generate import generate

PROMPTS = ["Anna: are you coming to the party?\nBen: yes", "hi", "Cleo: ok\nDan: see you at 7\nCleo: ok ok ok"]


def test_batched_equals_one_by_one_whatever_padding_side_the_tokenizer_holds(tiny_models):
    path = str(tiny_models["llama"])
    tok = models.load_tokenizer(path, "causal")
    assert tok.padding_side == "right"  # the training collator's side
    model = models.load_base_model(path, "causal", torch.float32)
    alone = [generate(model, tok, [p], "causal", 8, batch_size=1, progress=False)[0] for p in PROMPTS]
    for side in ("right", "left"):  # e.g. set by a training collator or by an older saved tokenizer
        tok.padding_side = side
        assert generate(model, tok, PROMPTS, "causal", 8, batch_size=3, progress=False) == alone
        assert tok.padding_side == side  # generation does not change shared tokenizer state
