"""Experiment folders: what may be deleted, when a run counts as finished, when it may be resumed.

- Only a folder that is recognisably an experiment is ever deleted by --overwrite: it holds
  config.yaml, results.json, checkpoints/ or error.json, and nothing that an experiment does not
  write. A folder holding anything else is refused, and so is an output_dir that is a file.
- A finished run (a results.json that parses and holds metrics) is immutable unless --overwrite; a
  results.json that does not parse is set aside as results.json.corrupt and the run is redone.
- A trained classifier's model/ (and a merged folder) names its labels in labels.json.
- A run is resumed only with the config it was started with (config.yaml is never rewritten on a
  resume); the refusal names the keys that differ.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path

from .errors import HubError
from .results import finished_record, set_aside_corrupt

LABELS_FILE = "labels.json"  # in model/ (and a merged folder): a classifier's label names, read by trained_labels
PARTIAL = "predictions.partial.jsonl"  # generate.Journal of an evaluation under way
MARKERS = ("config.yaml", "results.json", "checkpoints", "error.json")
# Everything an experiment (training, evaluation, a baseline, a sweep) writes into its folder.
ENTRIES = {*MARKERS, "results.json.corrupt", "predictions.jsonl", PARTIAL, "model", "model.tmp", "eval",
           "prompt_example.txt", "logs"}
# Keys that may change between a run's start and its resume: where things are, not what is computed.
LOCATION_KEYS = ("output_dir", "data_dir")


def _foreign(out: Path) -> list[str]:
    """Entries of out that no experiment writes (atomic writes' hidden .*.tmp files are ours)."""
    return sorted(p.name for p in out.iterdir()
                  if p.name not in ENTRIES and not (p.name.startswith(".") and p.name.endswith(".tmp")))


def check_output_dir(out: Path, overwrite: bool, resume: bool) -> str:
    """Decide what to do with output_dir, deleting nothing: "new" (absent or empty), "replace" (an
    experiment, --overwrite: call replace_run once the new run is ready to start) or "resume"."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HubError(f"output_dir {out} is a file, not a folder; choose another --output_dir")
    if not out.exists() or not any(out.iterdir()):
        return "new"
    foreign = _foreign(out)
    if foreign or not any((out / m).exists() for m in MARKERS):
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise HubError(f"{out} is not an experiment folder (it holds {shown or 'no config.yaml'}); "
                       f"refusing to {'delete' if overwrite else 'write into'} it: choose another --output_dir")
    if overwrite:
        return "replace"
    set_aside_corrupt(out / "results.json")
    if finished_record(out / "results.json") is not None:
        raise HubError(f"{out} already holds a finished run; pass --overwrite to replace it")
    if not resume:
        raise HubError(f"{out} holds an unfinished run; pass --resume to continue it or --overwrite")
    return "resume"


def replace_run(out: Path) -> None:
    """Delete an experiment folder that check_output_dir returned "replace" for (checked again: the
    folder may have changed while the new run was loading)."""
    out = Path(out)
    if out.is_dir() and not _foreign(out):
        shutil.rmtree(out)
    elif out.exists():
        raise HubError(f"{out} changed while the new run was loading and is no longer only an experiment; "
                       "refusing to delete it")


def differences(old: dict, new: dict, ignore=LOCATION_KEYS) -> dict[str, tuple]:
    """{leaf: (old, new)} for each config leaf that differs between two config dicts."""
    from .config import flatten

    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)}


def describe(diff: dict[str, tuple]) -> str:
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())


def check_resume_config(out: Path, cfg) -> None:
    """Refuse to resume a run under a config other than the one it was started with."""
    from .resolve import resolve

    path = Path(out) / "config.yaml"
    if not path.is_file():
        return
    try:
        started = resolve(config_file=path)
    except HubError as e:
        raise HubError(f"cannot resume {out}: its config.yaml is unusable ({e}); pass --overwrite to start over") from None
    diff = differences(started.to_dict(), cfg.to_dict())
    if diff:
        raise HubError(f"cannot resume {out} with a different config ({describe(diff)}); "
                       "rerun with the flags it was started with, or pass --overwrite to start over")


DISK_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def disk_errors(out: Path):
    """A full disk or a read-only / forbidden folder becomes one line naming the place, not a traceback
    (what was written so far is an unfinished run: free some space and pass --resume)."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise HubError(f"cannot write {e.filename or out}: {e.strerror}") from None
    except Exception as e:  # noqa: BLE001 - torch.save (RuntimeError) and safetensors report a full disk without an errno
        text = str(e)
        # Rust writers (safetensors, tokenizers) put the errno in the text: "... (os error 27)"
        code = next((int(n) for n in re.findall(r"\(os error (\d+)\)", text) if int(n) in DISK_ERRNOS), None)
        if code is not None:
            raise HubError(f"cannot write under {out}: {os.strerror(code)}") from None
        full = "No space left on device" in text or ("writ" in text and _free_bytes(out) == 0)
        if isinstance(e, HubError) or not full:
            raise
        raise HubError(f"cannot write under {out}: No space left on device") from None


def _free_bytes(out: Path) -> int | None:
    for folder in (Path(out), *Path(out).parents):
        if folder.exists():
            st = os.statvfs(folder)
            return st.f_bavail * st.f_frsize
    return None


def trained_labels(model_dir: Path) -> list[str]:
    """The label names a classifier was trained on (an encoder head's id -> label map), or []."""
    labels = Path(model_dir) / LABELS_FILE
    return json.loads(labels.read_text()) if labels.is_file() else []
