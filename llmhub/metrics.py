"""Metrics: accuracy, macro F1 and the unmatched share for labels; ROUGE for summaries."""
from __future__ import annotations

import functools
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


ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@functools.cache
def _scorer():
    """rouge_score's scorer with its default tokenizer, whose Porter stems are memoised: the same
    words recur across thousands of summaries, and stemming them anew was ~70 % of scoring."""
    from nltk.stem import porter
    from rouge_score import rouge_scorer, tokenize, tokenizers

    class StemmingTokenizer(tokenizers.Tokenizer):
        def __init__(self):
            self.stem = functools.lru_cache(maxsize=None)(porter.PorterStemmer().stem)

        def tokenize(self, text):
            return tokenize.tokenize(text, self)  # as DefaultTokenizer(use_stemmer=True), self the stemmer

    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), tokenizer=StemmingTokenizer())


def rouge_per_example(references: list[str | list[str]], predictions: list[str]) -> dict[str, list[float]]:
    """ROUGE-1/2/L/Lsum F-measure in percent of each prediction, stemmed; with several references
    the best one counts. Lsum treats newlines as sentence breaks (no nltk data needed)."""
    scorer, out = _scorer(), {k: [] for k in ROUGE_KEYS}
    for ref, pred in zip(references, predictions):
        scores = scorer.score_multi(ref if isinstance(ref, list) else [ref], pred)
        for k in ROUGE_KEYS:
            out[k].append(100 * scores[k].fmeasure)
    return out


def rouge_metrics(references: list[str | list[str]], predictions: list[str]) -> dict:
    """The means of rouge_per_example, in percent, and the number of predictions."""
    n = max(len(predictions), 1)
    return {**{k: sum(v) / n for k, v in rouge_per_example(references, predictions).items()}, "n": len(predictions)}
