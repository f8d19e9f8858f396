"""The project is an installed package: no path hacks, a console script, scripts that run from any cwd."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HACK = re.compile(r"sys\.path\.(insert|append)|PYTHONPATH")


def _tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / p for p in out.stdout.split()]


def test_no_path_hacks():
    files = [p for p in _tracked("*.py", "*.sh", "Makefile") if p.is_file()]
    assert len(files) > 50
    this = Path(__file__).resolve()
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in files if p != this
           for i, line in enumerate(p.read_text().splitlines(), 1) if HACK.search(line)]
    assert bad == []


def test_pyproject_declares_packages_script_and_extras():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"] == {"llmhub": "llmhub.cli:main"}
    assert {"ray", "serve", "dev", "offline"} <= set(meta["project"]["optional-dependencies"])
    assert any(d.startswith("pytest") for d in meta["project"]["optional-dependencies"]["dev"])
    assert "torch==2.13.0" in meta["project"]["dependencies"]
    include = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "llmhub" in include and not any(p.startswith("inference") for p in include)  # scripts, not a package


def test_console_script_and_model_script_run_from_any_cwd(tmp_path):
    exe = shutil.which("llmhub", path=str(Path(sys.executable).parent))
    assert exe, "pip install -e . puts the llmhub console script beside the interpreter"
    out = subprocess.run([exe, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "train" in out.stdout
    # a per-model script finds the package through the install, not through its own location
    script = ROOT / "llama2" / "llama2_classification.py"
    out = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "--lora_r" in out.stdout
