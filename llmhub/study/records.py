"""Reading a results folder: every results.json becomes a Record; corrupt ones are skipped.

Re-evaluations (`llmhub evaluate` writes EXP/eval/<name>/results.json) are not runs of their own and
are left out. A run belongs to the study its sweep declared: the grid's `study: {kind, varied}`, which the sweep
writes to sweep.json beside the run folders. A run outside any declared study (a single `train`,
the demo) stands alone: it varies nothing and is no ablation. Nothing is guessed from folder names.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HubError
from .grid import check_study

METHOD_LABEL = {"lora": "LoRA", "qlora": "QLoRA", "dora": "DoRA", "prefix": "prefix", "prompt": "prompt tuning",
                "ia3": "IA3", "full": "full FT"}


@dataclass
class Record:
    """One results.json, with the fields the tables need pulled out of its config."""
    path: Path
    data: dict
    study: dict = field(default_factory=dict)  # the sweep's declaration: {kind, varied[, reference]}

    def __post_init__(self):
        self.flat = _flatten(self.data["config"])  # config leaf -> value
        self.metrics = self.data["metrics"]
        self.mode = self.data.get("mode") or "finetune"
        self.kind = "classification" if "accuracy" in self.metrics else "generation"
        self.task = str(self.flat.get("task"))
        self.model = Path(str(self.flat.get("pretrained_ckpt"))).name  # a hub id's or folder's last part
        self.train = self.data.get("train") or {}
        self.examples = self.train.get("examples")
        method = METHOD_LABEL.get(self.flat.get("method"), str(self.flat.get("method")))
        self.setup = method if self.mode == "finetune" else self.mode  # "LoRA", "zero-shot", ...
        # Runs computed in bf16 are told apart from fp32 ones (results before schema 2 name no dtype: fp32).
        bf16 = (self.data.get("provenance") or {}).get("compute_dtype") == "bfloat16"
        self.precision = "bf16" if bf16 else "fp32"
        name = f"{self.model} + {method}" if self.mode == "finetune" else f"{self.model} {self.mode}"
        self.label = name + self.precision_suffix

    @property
    def precision_suffix(self) -> str:
        """What every label of a bf16 run ends with; fp32, the default, adds nothing."""
        return " (bf16)" if self.precision == "bf16" else ""

    @property
    def study_keys(self) -> set:
        """Every key its study varied, by last name: config leaves (`method.lora_r` -> `lora_r`) and run
        keys such as `mode`."""
        return {k.split(".")[-1] for k in self.study.get("varied") or []}

    @property
    def varied(self) -> set:
        """The config leaves its study varied (run keys such as `mode` are the record's own fields)."""
        return self.study_keys & set(self.flat)

    @property
    def ablation(self) -> bool:
        return self.study.get("kind") == "ablation"

    @property
    def hardware(self) -> str:
        hw = (self.data.get("provenance") or {}).get("hardware") or {}
        if hw.get("gpu"):
            return f"{hw.get('gpu_count', 1)}x {hw['gpu']}"
        if not hw:
            return "unknown"
        flags = f" ({', '.join(hw['cpu_bf16_flags']) or 'no bf16 flags'})" if "cpu_bf16_flags" in hw else ""
        return f"{hw.get('cpu_model') or 'CPU'} x{hw.get('cpu_count', '?')}{flags}"


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
        if path.parent.parent.name == "eval" and (path.parent.parent.parent / "config.yaml").is_file():
            continue  # EXP/eval/<name>/: a re-evaluation of a run (`llmhub evaluate`), not another run
        if path.parent.parent.name == "screen" and (path.parent.parent.parent / "sweep.json").is_file():
            continue  # SWEEP/screen/<name>/: a search's run, read by the sweep and the models table; also a
            # lead kept as its value's full-length run, which has a test score but is not a row
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("mode") == "screen":
                continue  # a search's screening run (validation loss only): read by the sweep, not a result
            problem = _check(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        if problem:
            print(f"warning: skipping {path}: {problem}", file=warn)
            continue
        records.append(Record(path, data))
    studies = {}  # sweep.json -> its study, read once per sweep
    for r in records:
        path = r.path.parent.parent / "sweep.json"
        if path not in studies:
            studies[path] = _study(path, warn)
        r.study = studies[path]
    return records


def _study(path: Path, warn) -> dict:
    """The study a sweep declared in sweep.json, or {} (no sweep, or a grid that declared none)."""
    if not path.is_file():
        return {}
    try:
        study = json.loads(path.read_text(encoding="utf-8")).get("study")
        return check_study(study, f"{path}: study") if study is not None else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, HubError) as e:
        print(f"warning: ignoring the study of {path}: {str(e).splitlines()[0]}", file=warn)
        return {}
