"""The project is an installed package: no path hacks, a console script, scripts that run from any cwd."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
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


def test_inference_scripts_run_from_any_cwd(tmp_path):
    """inference/*.py are thin scripts over llmhub.serve: they run from another folder, and
    `inference` itself is no installed package."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for script, expect in [("server.py", "--experiment_dir"), ("merge.py", "--output_dir"),
                           ("vllm/launch.py", "--merged_dir"), ("load_testing/run.py", "targets")]:
        out = subprocess.run([sys.executable, str(ROOT / "inference" / script), "--help"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0 and expect in out.stdout, (script, out.stderr)
    out = subprocess.run([sys.executable, "-c", "import inference"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "No module named 'inference'" in out.stderr


def test_installed_package_finds_its_recipes_from_any_cwd(tmp_path):
    """`pip install .` (a wheel, not editable) ships the recipes as package data: from a folder outside
    the checkout, the installed console script lists the models, shows a model folder's flags and
    resolves its recipe. The new venv sees this suite's packages (torch, ...) through a .pth line, not
    the editable llmhub."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "llmhub", src / "llmhub", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "suite.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    out = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}

    def run(*args):
        proc = subprocess.run([str(a) for a in args], cwd=away, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "smollm2-135m" in run(venv / "bin" / "llmhub", "models")
    assert "--lora_r" in run(venv / "bin" / "llmhub", "train", "--model", "llama2", "--help")
    where, ckpt = run(py, "-c", "import llmhub.recipes as r; print(r.__file__); "
                                "print(r.defaults('llama2', 'summarization')['model']['pretrained_ckpt'])").split()
    assert Path(where).is_relative_to(venv) and ckpt == "meta-llama/Llama-2-7b-hf"
