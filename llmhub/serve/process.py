"""Start our server (`python -m llmhub.serve.server`, what `inference/server.py` runs) as a child process on a free 127.0.0.1 port and wait until it answers.

Used by the serving benchmark and the server tests, so both exercise the real uvicorn process.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .. import foreign_env
from ..errors import HubError

# The servers as commands: modules of the installed package, so they start from any folder.
SERVER = [sys.executable, "-m", "llmhub.serve.server"]
VLLM_SERVER = [sys.executable, "-m", "llmhub.serve.vllm_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`with ServerProcess(["--model", ...]) as srv: httpx.get(srv.url + "/health")`.
    `script` runs another server script taking --host/--port; `command` replaces our server's
    command altogether (VLLM_SERVER, or another program, e.g. `[python, "-m", "transformers.cli.transformers",
    "serve"]`), run in `cwd`; `health` is the path polled until it answers one of the `ready` statuses."""

    def __init__(self, args: list[str], port: int | None = None, startup_timeout: float = 180.0,
                 log_path: str | Path | None = None, env: dict | None = None, ready: tuple[int, ...] = (200,),
                 script: str | Path | None = None, health: str = "/health", command: list[str] | None = None,
                 cwd: str | Path | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        program = command or ([sys.executable, str(script)] if script else SERVER)
        self.args = [*map(str, program), *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.cwd = cwd
        self.health = health
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.env = {**foreign_env(), "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.ready = ready  # /health statuses that mean "up" (a vllm front answers 503 while vLLM is down)

    def __enter__(self) -> "ServerProcess":
        import httpx

        if self.log_path is None:  # a file, not a pipe: an unread pipe would block a chatty server
            fd, name = tempfile.mkstemp(prefix="llmhub-server-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                last = (self.log_path.read_text().strip().splitlines() or ["(no output)"])[-1]
                raise HubError(f"server exited with status {self.proc.returncode}: {last}")
            try:
                if httpx.get(self.url + self.health, timeout=2).status_code in self.ready:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise HubError(f"server did not answer /health within {self.startup_timeout:.0f} s")

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down gracefully on SIGINT
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __exit__(self, *exc) -> None:
        self.stop()
