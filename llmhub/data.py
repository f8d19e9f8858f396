"""Tasks and their data: read local JSONL/CSV, validate columns, clean, sample reproducibly.

Every task yields rows of {"id", "input", "target"} where `target` is a label (classification) or
a reference text, and test rows may carry `references` (several references per input, DialogSum).

Validation: a task's own validation split (SAMSum, DialogSum, a custom --validation_file), else a
slice of the train split held out before training examples are sampled (20 Newsgroups, custom data
without a validation file): `validation_fraction` of the train file, stratified for classification,
drawn with a fixed seed so every run of a study holds out the same rows whatever its own seed.
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import HubError


@dataclass(frozen=True)
class TaskSpec:
    kind: str  # "classification" | "generation"
    folder: str | None
    train: str | None
    test: str | None
    validation: str | None  # the dataset's own validation file; None: hold a slice of train out
    input_column: str
    target_column: str
    id_column: str | None
    max_new_tokens: int  # generation budget at evaluation


TASKS = {
    "classification": TaskSpec("classification", "newsgroups", "train.jsonl.gz", "test.jsonl", None,
                               "text", "label", None, 10),
    "summarization": TaskSpec("generation", "samsum", "train.jsonl", "test.jsonl", "validation.jsonl",
                              "dialogue", "summary", "id", 60),
    "dialogsum": TaskSpec("generation", "dialogsum", "train.jsonl", "test.jsonl", "validation.jsonl",
                          "dialogue", "summary", "id", 60),
}
TASK_NAMES = [*TASKS, "custom"]


def task_spec(data_cfg) -> TaskSpec:
    """The spec of the configured task (custom tasks take their columns from the config)."""
    if data_cfg.task == "custom":
        if data_cfg.kind not in ("classification", "generation"):
            raise HubError(f"unknown custom task kind '{data_cfg.kind}'; allowed: classification, generation")
        if data_cfg.dataset:
            from . import hubdata

            validation = data_cfg.validation_split if data_cfg.validation_split in hubdata.split_names(data_cfg) else None
            files = (data_cfg.train_split, data_cfg.test_split, validation)
        elif not data_cfg.train_file or not data_cfg.test_file:
            raise HubError("task 'custom' needs --dataset, or --train_file and --test_file")
        else:
            files = (data_cfg.train_file, data_cfg.test_file, data_cfg.validation_file)
        return TaskSpec(data_cfg.kind, None, *files,
                        data_cfg.input_column, data_cfg.target_column, "id",  # users join predictions on it
                        10 if data_cfg.kind == "classification" else 128)
    if data_cfg.task not in TASKS:
        raise HubError(f"unknown task '{data_cfg.task}'; allowed: {', '.join(TASK_NAMES)}")
    return TASKS[data_cfg.task]


def _read_text(path: Path) -> str:
    """The file's text (gzip-aware); UTF-8 with or without a byte-order mark, else one error line."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - raw.rfind(b"\n", 0, e.start)
        raise HubError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {column}); "
                       "save the file as UTF-8") from None


def read_numbered(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) of a JSONL (optionally .gz) or CSV file; a malformed line is reported
    with file and line number."""
    path = Path(path)
    if not path.is_file():
        raise HubError(f"data file not found: {path}")
    text = _read_text(path)
    if ".csv" in path.suffixes:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            return [(reader.line_num, dict(r)) for r in reader]
        except csv.Error as e:
            raise HubError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    rows = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise HubError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise HubError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


def read_records(path: str | Path) -> list[dict]:
    """The records of a JSONL (optionally .gz) or CSV file."""
    return [row for _, row in read_numbered(path)]


def _cell(path: Path, lineno: int, rec: dict, col: str, required: bool) -> str:
    """One field as text; a missing value (JSON null, an empty CSV cell) is refused, never "None"."""
    if col not in rec:
        raise HubError(f"{path}:{lineno}: no column '{col}' (columns: {', '.join(str(c) for c in rec)})")
    value = rec[col]
    if value is None or (required and isinstance(value, str) and not value.strip()):
        raise HubError(f"{path}:{lineno}: column '{col}' has no value; fill it in or remove the row")
    if isinstance(value, (dict, list)):
        raise HubError(f"{path}:{lineno}: column '{col}' must be text or a number, got {type(value).__name__}")
    return str(value)


def _split_path(data_cfg, spec: TaskSpec, split: str) -> Path:
    """The file a split is read from; a held-out validation slice is read from the train file."""
    name = {"train": spec.train, "test": spec.test, "validation": spec.validation or spec.train}[split]
    if spec.folder is None:
        return Path(name)
    root = Path(data_cfg.data_dir)
    if not root.is_dir():
        raise HubError(f"data directory not found: {root} (run `python -m llmhub prepare-data --data_dir {root}`)")
    return root / spec.folder / name


def split_file(data_cfg, split: str) -> Path | None:
    """The file a split is read from (results.json records its sha256); None for a --dataset."""
    return None if _from_dataset(data_cfg) else _split_path(data_cfg, task_spec(data_cfg), split)


def _from_dataset(data_cfg) -> bool:
    return data_cfg.task == "custom" and bool(data_cfg.dataset)


def data_provenance(data_cfg, splits) -> dict:
    """results.json's record of the data read: each file's sha256, or the --dataset's fingerprints."""
    from .io import sha256_file

    if _from_dataset(data_cfg):
        from . import hubdata

        return {"data_files": {}, "dataset": hubdata.provenance(data_cfg)}
    return {"data_files": {str(p): sha256_file(p) for p in (split_file(data_cfg, s) for s in splits)}}


# The cleaning of scikit-learn's fetch_20newsgroups(remove=("headers", "footers", "quotes")), copied
# from sklearn/datasets/_twenty_newsgroups.py (BSD-3-Clause, (c) the scikit-learn developers) because
# that module is private: its functions may change or go without notice.
_QUOTE_RE = re.compile(r"(writes in|writes:|wrote:|says:|said:|^In article|^Quoted from|^\||^>)")


def _strip_footer(text: str) -> str:
    """Drop the signature: everything after the last blank or all-hyphen line (trailing blanks aside)."""
    lines = text.strip().split("\n")
    for line_num in range(len(lines) - 1, -1, -1):
        if lines[line_num].strip().strip("-") == "":
            break
    return "\n".join(lines[:line_num]) if line_num > 0 else text


def clean_newsgroup(text: str) -> str:
    """Strip headers (up to the first blank line), signature footer and quoted replies, exactly as
    scikit-learn's `remove=` option does."""
    body = _strip_footer(text.partition("\n\n")[2])
    return "\n".join(line for line in body.split("\n") if not _QUOTE_RE.search(line)).strip()


def load_split(data_cfg, split: str) -> list[dict]:
    """Rows {"id", "input", "target"[, "references"]} of one split, cleaned, not yet sampled."""
    spec = task_spec(data_cfg)
    if data_cfg.clean not in ("raw", "strip"):
        raise HubError(f"unknown clean mode '{data_cfg.clean}'; allowed: raw, strip")
    if _from_dataset(data_cfg):
        from . import hubdata

        name = {"train": spec.train, "test": spec.test, "validation": spec.validation}[split]
        return list(_rows(data_cfg.task, spec, f"{data_cfg.dataset}[{name}]", hubdata.records(data_cfg, name),
                          data_cfg.clean, split))
    path = _split_path(data_cfg, spec, split)
    if not path.is_file():
        raise HubError(f"data file not found: {path}")
    # Cleaning 11k posts takes seconds; a sweep reads the same split once per run, so keep it.
    stat = path.stat()
    return list(_load_split(data_cfg.task, spec, str(path), stat.st_mtime_ns, stat.st_size,
                            data_cfg.clean, split))


@functools.lru_cache(maxsize=8)
def _load_split(task: str, spec: TaskSpec, path: str, _mtime: int, _size: int, clean: str,
                split: str) -> tuple[dict, ...]:
    return _rows(task, spec, path, read_numbered(path), clean, split)


def _rows(task: str, spec: TaskSpec, where: str, numbered: list[tuple[int, dict]], clean: str,
          split: str) -> tuple[dict, ...]:
    """Checked, cleaned {"id", "input", "target"} rows of numbered records read from `where`."""
    path = where
    rows = []
    for i, (lineno, rec) in enumerate(numbered):
        text = _cell(path, lineno, rec, spec.input_column, required=False)
        target = _cell(path, lineno, rec, spec.target_column, required=True)
        if task == "classification" and clean == "strip":
            text = clean_newsgroup(text)
            if not text and split == "train":  # nothing to learn from; the test split stays whole
                continue
        rid = str(rec[spec.id_column]) if spec.id_column and rec.get(spec.id_column) is not None else str(i)
        rows.append({"id": rid, "input": text, "target": target})
    if split != "train" and task == "dialogsum":
        rows = group_references(rows)
    return tuple(rows)


def group_references(rows: list[dict]) -> list[dict]:
    """DialogSum's test split repeats each dialogue as `test_N_1..3`: one row, all references."""
    grouped: dict[str, dict] = {}
    for row in rows:
        base = row["id"].rsplit("_", 1)[0] if row["id"].count("_") >= 2 else row["id"]
        if base not in grouped:
            grouped[base] = {"id": base, "input": row["input"], "target": row["target"], "references": []}
        grouped[base]["references"].append(row["target"])
    return list(grouped.values())


def sample_count(n_total: int, fraction: float) -> int:
    """floor(F * N): 2.5 % of the 10,664 cleaned posts is 266, 100 % is all of them."""
    if not 0 < fraction <= 1:
        raise HubError(f"train_sample_fraction must be in (0, 1], got {fraction}")
    return n_total if fraction == 1 else math.floor(fraction * n_total)


def sample_rows(rows: list[dict], n: int, seed: int, stratify: bool) -> list[dict]:
    """Exactly n rows, seeded; stratified by target for classification."""
    if n >= len(rows):
        return list(rows)
    if n <= 0:
        raise HubError("the train split is empty after sampling; raise --train_samples or the fraction")
    from sklearn.model_selection import train_test_split

    labels = [r["target"] for r in rows]
    try:
        picked, _ = train_test_split(rows, train_size=n, random_state=seed,
                                     stratify=labels if stratify else None)
    except ValueError:  # fewer rows than classes: stratification impossible, fall back to random
        picked, _ = train_test_split(rows, train_size=n, random_state=seed)
    return picked


VALIDATION_SEED = 0  # the held-out slice is the same for every run, whatever its seed


def _subset(rows: list[dict], n: int | None, classification: bool) -> list[dict]:
    """The first n rows, or a fixed stratified sample of n for classification (files ordered by class)."""
    if n is None:
        return rows
    return sample_rows(rows, n, seed=VALIDATION_SEED, stratify=True) if classification else rows[:n]


def train_and_validation(data_cfg) -> tuple[list[dict], list[dict]]:
    """(train pool, validation rows): the task's own validation split (its first
    `validation_samples`, stratified for classification), or a slice of `validation_samples` rows
    (default: `validation_fraction` of the train split) held out of train."""
    spec = task_spec(data_cfg)
    train = load_split(data_cfg, "train")
    classification = spec.kind == "classification"
    if spec.validation:
        return train, _subset(load_split(data_cfg, "validation"), data_cfg.validation_samples, classification)
    n = data_cfg.validation_samples
    if n is None:
        n = math.floor(data_cfg.validation_fraction * len(train))
    if n <= 0:
        return train, []
    if n >= len(train):
        raise HubError(f"validation_samples {n} leaves no training rows of the {len(train)} in the train split; "
                       f"allowed: < {len(train)}")
    validation = sample_rows(train, n, VALIDATION_SEED, stratify=classification)
    held = {id(r) for r in validation}
    return [r for r in train if id(r) not in held], validation


def load_task(data_cfg, seed: int, splits=("train", "test")) -> dict[str, list[dict]]:
    """The sampled train split, the validation split and the (optionally truncated) test split of
    the configured task; the splits asked for ("train", "validation", "test")."""
    spec = task_spec(data_cfg)
    out = {}
    if "train" in splits or "validation" in splits:
        train, validation = train_and_validation(data_cfg)
        if "validation" in splits and validation:
            out["validation"] = validation
    if "train" in splits:
        if data_cfg.train_samples is not None:
            n = data_cfg.train_samples
            if n <= 0:
                raise HubError(f"train_samples must be positive, got {n}")
        else:
            n = sample_count(len(train), data_cfg.train_sample_fraction)
        train = sample_rows(train, n, seed, stratify=spec.kind == "classification")
        if not train:
            raise HubError(f"the train split of task '{data_cfg.task}' is empty after sampling")
        out["train"] = train
    if "test" in splits:
        # 20 Newsgroups' test file is ordered by class, so its first N rows would be one or two
        # classes: classification takes a stratified sample (fixed seed, the same for every run).
        test = _subset(load_split(data_cfg, "test"), data_cfg.test_samples, spec.kind == "classification")
        if not test:
            raise HubError(f"the test split of task '{data_cfg.task}' is empty")
        out["test"] = test
    return out


def label_set(rows: list[dict]) -> list[str]:
    return sorted({r["target"] for r in rows})


def prepare_data(data_dir: str | Path) -> None:
    """Fill data_dir from the Hugging Face hub (needs network): newsgroups, samsum, dialogsum."""
    from datasets import load_dataset

    root = Path(data_dir)
    from .io import atomic_write_bytes

    def dump(rows, path: Path, gz: bool = False):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        atomic_write_bytes(path, gzip.compress(data) if gz else data)

    ng = load_dataset("SetFit/20_newsgroups")
    for split, name, gz in (("train", "train.jsonl.gz", True), ("test", "test.jsonl", False)):
        dump([{"text": r["text"], "label": r["label_text"]} for r in ng[split]], root / "newsgroups" / name, gz)
    for repo, folder in (("knkarthick/samsum", "samsum"), ("knkarthick/dialogsum", "dialogsum")):
        ds = load_dataset(repo)
        for split in ("train", "validation", "test"):
            cols = ["id", "dialogue", "summary"] + (["topic"] if folder == "dialogsum" else [])
            dump([{c: r.get(c) for c in cols} for r in ds[split]], root / folder / f"{split}.jsonl")
