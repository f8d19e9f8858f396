"""Datasets beyond the built-in files (`--task custom --dataset NAME`), through the `datasets` library:

- a folder written by `save_to_disk` -> `datasets.load_from_disk`;
- a JSON/JSONL/CSV/Parquet file -> `datasets.load_dataset(<format>, data_files=...)`;
- anything else (a hub id with `--dataset_config`, a folder of data files whose names say their
  split) -> `datasets.load_dataset(NAME, CONFIG)`, which works offline from the datasets cache.

Splits are chosen with --train_split / --validation_split / --test_split, columns with
--input_column / --target_column (class-label columns become their names). Rows then go through
the same checks as local files (llmhub/data.py).
"""
from __future__ import annotations

import functools
from pathlib import Path

from .errors import HubError

FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@functools.lru_cache(maxsize=4)
def _load(name: str, config: str | None) -> dict:
    """{split name: datasets.Dataset}; a load failure is one line naming the dataset."""
    from datasets import Dataset, load_dataset, load_from_disk

    path = Path(name)
    try:
        if path.is_dir() and any((path / f).is_file() for f in ("dataset_dict.json", "state.json")):
            loaded = load_from_disk(str(path))
        elif path.is_file():
            if path.suffix not in FILE_FORMATS:
                raise HubError(f"dataset file {name}: unknown format '{path.suffix}'; allowed: {', '.join(FILE_FORMATS)}")
            loaded = load_dataset(FILE_FORMATS[path.suffix], data_files=str(path))
        else:
            loaded = load_dataset(name, config)
    except HubError:
        raise
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs one line
        raise HubError(f"dataset '{name}' could not be loaded ({type(e).__name__}: "
                       f"{(str(e).splitlines() or [''])[0][:300]})") from None
    return {"train": loaded} if isinstance(loaded, Dataset) else dict(loaded)


def split_names(data_cfg) -> list[str]:
    return list(_load(data_cfg.dataset, data_cfg.dataset_config))


def records(data_cfg, split_name: str) -> list[tuple[int, dict]]:
    """(row number, record) of one split, with class-label columns as label names."""
    splits = _load(data_cfg.dataset, data_cfg.dataset_config)
    if split_name not in splits:
        raise HubError(f"dataset '{data_cfg.dataset}' has no split '{split_name}'; splits: {', '.join(splits)} "
                       "(choose with --train_split, --validation_split, --test_split)")
    ds = splits[split_name]
    missing = [c for c in (data_cfg.input_column, data_cfg.target_column) if c not in ds.column_names]
    if missing:
        raise HubError(f"dataset '{data_cfg.dataset}' split '{split_name}' has no column '{missing[0]}' "
                       f"(columns: {', '.join(ds.column_names)}); map yours with --input_column / --target_column")
    names = {c: f.int2str for c, f in ds.features.items() if hasattr(f, "int2str")}
    return [(i + 1, {k: names[k](v) if k in names and v is not None else v for k, v in row.items()})
            for i, row in enumerate(ds)]


def provenance(data_cfg) -> dict:
    """What was read: the dataset, its config and each split's `datasets` fingerprint."""
    splits = _load(data_cfg.dataset, data_cfg.dataset_config)
    return {"dataset": data_cfg.dataset, "dataset_config": data_cfg.dataset_config,
            "fingerprints": {name: ds._fingerprint for name, ds in splits.items()}}
