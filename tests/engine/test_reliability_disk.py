"""A full disk or a folder the run may not write into is one `error:` line (exit status 2, no
traceback), tested without mount rights so it runs everywhere: the size limit of a process
(RLIMIT_FSIZE, the signal it would raise ignored, so a write past it fails with EFBIG as it fails
with ENOSPC on a full disk) and a folder whose write permission is removed (not for root, whom
permissions do not stop). test_reliability.py does the same on a real read-only / full tmpfs where
`unshare -m` is allowed."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys

import pytest

from test_reliability import ROOT, T


def error_line(proc) -> str:
    """The one error line, exit status 2, no traceback; a progress bar may leave the cursor mid-line,
    so the line is taken from "error: " on."""
    lines = [ln[ln.index("error: "):] for ln in proc.stderr.splitlines() if "error: " in ln]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def _cli_limited(args, limit_bytes: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored signals stay ignored across exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "llmhub", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"}, preexec_fn=limit)


@pytest.mark.parametrize("limit_kib", [1, 8, 20])
def test_a_write_past_the_size_limit_is_one_line(tiny_models, data_dir, tmp_path, limit_kib):
    """Sizes of this tiny run's files: config.yaml 1.3 KB, the adapter's safetensors 17 KB, the
    tokenizer 26 KB, the checkpoint's optimizer state more. So 1 KiB stops the first file (YAML through
    Python's own writes), 8 KiB the checkpoint's weights (safetensors), 20 KiB a later writer."""
    out = tmp_path / "out"
    line = error_line(_cli_limited(T(tiny_models, data_dir, out, "--save_steps", "1"), limit_kib * 1024))
    assert line.startswith("error: cannot write") and "File too large" in line, line
    assert not (out / "results.json").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: a folder without write permission does not stop root")
def test_a_folder_without_write_permission_is_one_line(tiny_models, data_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        line = error_line(subprocess.run([sys.executable, "-m", "llmhub", *T(tiny_models, data_dir, locked / "out")],
                                         cwd=ROOT, capture_output=True, text=True, timeout=300))
    finally:
        locked.chmod(0o755)
    assert "Permission denied" in line and str(locked) in line, line
