"""Reading a results folder: every results.json becomes a Record; corrupt ones are skipped.

A run folder's siblings form its study: the config keys that differ between them are what the
study varied (a sweep's grid axes). A study that varies anything beyond the sample-size and
model keys is an ablation.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HubError

IGNORED_KEYS = {"output_dir", "data_dir", "train_file", "test_file"}  # where, not what
# A study that varies only these is a sample-efficiency / model comparison, not an ablation.
SAMPLE_KEYS = {"train_samples", "train_sample_fraction", "pretrained_ckpt", "family", "torch_dtype", "seed",
               "task", "clean", "method", "learning_rate", "batch_size", "grad_accum"}
METHOD_LABEL = {"lora": "LoRA", "qlora": "QLoRA", "prefix": "prefix", "prompt": "prompt tuning",
                "ia3": "IA3", "full": "full FT"}


@dataclass
class Record:
    """One results.json, with the fields the tables need pulled out of its config."""
    path: Path
    data: dict
    varied: set = field(default_factory=set)  # config leaves its study varied

    def __post_init__(self):
        self.flat = _flatten(self.data["config"])  # config leaf -> value
        self.metrics = self.data["metrics"]
        self.mode = self.data.get("mode") or "finetune"
        self.kind = "classification" if "accuracy" in self.metrics else "generation"
        self.task = str(self.flat.get("task"))
        self.model = Path(str(self.flat.get("pretrained_ckpt"))).name  # a hub id's or folder's last part
        self.train = self.data.get("train") or {}
        self.examples = self.train.get("examples")
        method = METHOD_LABEL.get(self.flat.get("method"), self.flat.get("method"))
        self.label = f"{self.model} + {method}" if self.mode == "finetune" else f"{self.model} {self.mode}"

    @property
    def ablation(self) -> bool:
        return bool(self.varied - SAMPLE_KEYS)

    @property
    def hardware(self) -> str:
        hw = (self.data.get("provenance") or {}).get("hardware") or {}
        if hw.get("gpu"):
            return f"{hw.get('gpu_count', 1)}x {hw['gpu']}"
        return f"CPU x{hw.get('cpu_count', '?')}" if hw else "unknown"


def _flatten(config: dict) -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(v)
        else:
            out[k] = v
    return out


def _check(data) -> str | None:
    """Why a results.json cannot be used, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    m, c = data.get("metrics"), data.get("config")
    if not isinstance(m, dict) or not isinstance(c, dict):
        return "no 'metrics' or 'config' mapping"
    need = ("accuracy",) if "accuracy" in m else ("rouge1", "rouge2", "rougeL")
    if not all(isinstance(m.get(k), (int, float)) for k in need):
        return f"metrics lack a number for {' or '.join(need)}"
    flat = _flatten(c)
    if "pretrained_ckpt" not in flat or "task" not in flat:
        return "config lacks model.pretrained_ckpt or data.task"
    train = data.get("train")
    if train is not None and not isinstance(train, dict):
        return "'train' is not a mapping"
    bad = [k for k, v in (train or {}).items() if k in ("examples", "seconds", "steps", "cost_usd")
           and v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
    return f"train.{bad[0]} is not a number" if bad else None


def load_records(root: str | Path, warn=None) -> list[Record]:
    """Every usable results.json under root; a corrupt one is one warning line, then skipped."""
    warn = warn or sys.stderr
    root = Path(root)
    if not root.is_dir():
        raise HubError(f"results folder not found: {root}")
    records = []
    for path in sorted(root.rglob("results.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            problem = _check(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if problem:
            print(f"warning: skipping {path}: {problem}", file=warn)
            continue
        records.append(Record(path, data))
    studies = defaultdict(list)  # siblings under one folder = one study (one sweep's output root)
    for r in records:
        studies[r.path.parent.parent].append(r)
    for group in studies.values():
        keys = set().union(*(r.flat for r in group)) - IGNORED_KEYS
        varied = {k for k in keys if len({json.dumps(r.flat.get(k), sort_keys=True) for r in group}) > 1}
        for r in group:
            r.varied = varied
    return records
