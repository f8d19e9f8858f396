"""Metric functions against hand-computed values."""
import pytest

from llmhub.metrics import ROUGE_KEYS, classification_metrics, match_label, normalise, rouge_metrics, \
    rouge_per_example

LABELS = ["comp.graphics", "comp.os.ms-windows.misc", "sci.space", "talk.politics.misc"]


def test_normalise():
    assert normalise("  Sci.Space!\n") == "sci space"


@pytest.mark.parametrize("text,expected", [
    ("sci.space", "sci.space"),
    ("SCI.SPACE.", "sci.space"),
    (" comp.graphics\n### Sentence", "comp.graphics"),
    ("comp.os.ms-windows.misc is my guess", "comp.os.ms-windows.misc"),
    ("I think it is sci.space", "sci.space"),
    ("comp", None),
    ("", None),
    ("rec.autos", None),
])
def test_match_label(text, expected):
    assert match_label(text, LABELS) == expected


def test_classification_metrics_by_hand():
    refs = ["a", "a", "b", "b"]
    preds = ["a", "b", "b", None]
    m = classification_metrics(refs, preds, ["a", "b"])
    assert m["accuracy"] == pytest.approx(50.0)
    # a: P=1/1, R=1/2 -> F1=2/3; b: P=1/2, R=1/2 -> F1=1/2; macro = 7/12
    assert m["f1_macro"] == pytest.approx(100 * 7 / 12)
    assert m["unmatched_rate"] == pytest.approx(25.0)
    assert m["n"] == 4


def test_rouge_by_hand():
    # unigrams: P = 2/2, R = 2/3 -> F = 0.8; bigrams: P = 1/1, R = 1/2 -> F = 2/3
    m = rouge_metrics(["the cat sat"], ["the cat"])
    assert m["rouge1"] == pytest.approx(80.0)
    assert m["rouge2"] == pytest.approx(200 / 3)
    assert m["rougeL"] == pytest.approx(80.0)


def test_rouge_stems_and_takes_best_reference():
    assert rouge_metrics(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)
    multi = rouge_metrics([["dogs bark loudly", "the cat sat"]], ["the cat sat"])
    assert multi["rouge1"] == pytest.approx(100.0)


def test_rouge_lsum_splits_on_newlines():
    # one sentence per line: Lsum scores the union LCS per reference sentence
    one_line = rouge_metrics(["a b\nc d"], ["c d a b"])
    assert one_line["rougeLsum"] == pytest.approx(100.0)
    assert one_line["rougeL"] < 100.0


def test_rouge_is_rouge_scores_default_stemming_scorer():
    """The memoised stems change nothing: every score is the stock RougeScorer(use_stemmer=True)'s."""
    from rouge_score import rouge_scorer

    stock = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    refs = ["Amanda baked cookies and will bring Jerry some tomorrow.", "The runners were running\nfaster races."]
    preds = ["Amanda is baking cookies for Jerry.", "Runners ran in the races, running faster."]
    ours = rouge_per_example(refs + refs, preds + preds[::-1])  # the second pass reads the memo
    for i, (ref, pred) in enumerate(zip(refs + refs, preds + preds[::-1])):
        for k in ROUGE_KEYS:
            assert ours[k][i] == 100 * stock.score(ref, pred)[k].fmeasure
