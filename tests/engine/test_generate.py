"""Batched generation pads each call on the side its family needs, whatever the tokenizer holds."""
import torch

from llmhub import models
from llmhub.generate import Journal, generate

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


def test_a_journal_resumes_generation_after_its_last_finished_batch(tiny_models, tmp_path):
    path = str(tiny_models["llama"])
    tok = models.load_tokenizer(path, "causal")
    model = models.load_base_model(path, "causal", torch.float32)
    prompts = PROMPTS * 2  # 6 prompts, 3 batches of 2
    whole = generate(model, tok, prompts, "causal", 8, batch_size=2, progress=False)
    journal = Journal(tmp_path / "partial.jsonl")
    assert generate(model, tok, prompts, "causal", 8, batch_size=2, progress=False, journal=journal) == whole
    lines = journal.path.read_text().splitlines()
    assert len(lines) == 3 and journal.reused == 0
    # killed in the third batch, mid-line: two batches kept, the cut line ignored
    journal.path.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
    calls = []
    model.generate = lambda *a, _g=model.generate, **kw: calls.append(1) or _g(*a, **kw)
    resumed = Journal(journal.path)
    assert generate(model, tok, prompts, "causal", 8, batch_size=2, progress=False, journal=resumed) == whole
    assert (len(calls), resumed.reused) == (1, 2) and resumed.reused_seconds > 0
    expected = generate(model, tok, prompts, "causal", 4, batch_size=2, progress=False)
    calls.clear()  # other settings (here max_new_tokens) never take a kept batch
    other = Journal(journal.path)
    assert generate(model, tok, prompts, "causal", 4, batch_size=2, progress=False, journal=other) == expected
    assert other.reused == 0 and len(calls) == 3
    calls.clear()  # nor does another context (evaluation passes the run's config)
    assert generate(model, tok, prompts, "causal", 8, batch_size=2, progress=False,
                    journal=Journal(journal.path, context={"torch_dtype": "float32"})) == whole
    assert len(calls) == 3
