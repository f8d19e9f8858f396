"""The committed README tables and report plots are what `report` makes of the committed results:
the command docs/studies.md names is run on a copy of results/, the READMEs and assets/, and every
README and every plot it writes must equal the committed file byte for byte."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_report_regenerates_every_committed_block_and_plot(tmp_path):
    found = re.findall(r"^`(python -m llmhub report results[^`]*)`$", (ROOT / "docs" / "studies.md").read_text(),
                       re.M)
    assert len(found) == 1, found
    argv = shlex.split(found[0])
    readmes = [argv[i + 1] for i, a in enumerate(argv) if a == "--readme"]
    assert sorted(readmes) == sorted(str(p.relative_to(ROOT)) for p in [ROOT / "README.md", *ROOT.glob("*/README.md")]
                                     if "<!-- BEGIN results:" in p.read_text())
    shutil.copytree(ROOT / "results", tmp_path / "results")
    for readme in readmes:
        (tmp_path / readme).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / readme, tmp_path / readme)
    (tmp_path / "assets").mkdir()  # empty: every plot is drawn anew
    proc = subprocess.run([sys.executable, *argv[1:], "--assets", "assets"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for readme in readmes:
        assert (tmp_path / readme).read_text() == (ROOT / readme).read_text(), f"{readme} differs from what report writes"
    drawn = sorted(p.name for p in (tmp_path / "assets").glob("*.png"))
    assert "accuracy_vs_samples.png" in drawn and any(n.startswith("loss_") for n in drawn), drawn
    for name in drawn:
        assert (ROOT / "assets" / name).is_file(), f"report draws assets/{name}, which is not committed"
        assert (tmp_path / "assets" / name).read_bytes() == (ROOT / "assets" / name).read_bytes(), \
            f"assets/{name} differs from what report draws"
