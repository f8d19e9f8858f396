"""Metrics: accuracy, macro F1 and the unmatched share for labels; ROUGE for summaries."""
from __future__ import annotations

import re
import string

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace collapsed: 'Sci.Space!' -> 'sci space'."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def match_label(prediction: str, labels: list[str]) -> str | None:
    """The label a generated text names: exact after normalising, else the longest label the text
    starts with, else the longest label it contains; None when it names none."""
    norm = normalise(prediction)
    by_norm = {normalise(label): label for label in labels}
    if norm in by_norm:
        return by_norm[norm]
    for test in (lambda n: norm.startswith(n + " ") or norm == n, lambda n: f" {n} " in f" {norm} "):
        hits = [n for n in by_norm if test(n)]
        if hits:
            return by_norm[max(hits, key=len)]
    return None


def classification_metrics(references: list[str], predictions: list[str | None],
                           labels: list[str]) -> dict:
    """Accuracy and macro F1 in percent over the known labels; unmatched predictions count wrong."""
    from sklearn.metrics import accuracy_score, f1_score

    none = "\0unmatched"
    preds = [p if p is not None else none for p in predictions]
    return {
        "accuracy": 100 * accuracy_score(references, preds),
        "f1_macro": 100 * f1_score(references, preds, labels=labels, average="macro", zero_division=0),
        "unmatched_rate": 100 * sum(p is None for p in predictions) / max(len(predictions), 1),
        "n": len(references),
    }


def rouge_metrics(references: list[str | list[str]], predictions: list[str]) -> dict:
    """ROUGE-1/2/L/Lsum F-measure in percent, stemmed; with several references the best one counts.
    Lsum treats newlines as sentence breaks (no nltk data needed)."""
    from rouge_score import rouge_scorer

    keys = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(keys, use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for ref, pred in zip(references, predictions):
        refs = ref if isinstance(ref, list) else [ref]
        scores = scorer.score_multi(refs, pred)
        for k in keys:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {**{k: 100 * v / n for k, v in totals.items()}, "n": len(predictions)}
