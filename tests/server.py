"""`trialdesk serve` as a real subprocess, for the crash test and bench/load.py (no tests here).

The server runs in its own process group so that SIGKILL reaches uvicorn's worker processes
too; readiness is polled over HTTP with a deadline, never waited for with a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

START = "from trialdesk.cli.main import run; run()"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_url_with_schema(url: str, schema: str) -> str:
    """A URL whose connections work in ``schema`` (libpq ``options``), for a child process."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


class Server:
    """One `trialdesk serve` process on ``port`` with the given TRIALDESK_* environment."""

    def __init__(
        self, env: Mapping[str, str], log: Path, *, port: int | None = None, workers: int = 1
    ) -> None:
        self.env = {**os.environ, **env}
        self.log = log
        self.port = port or free_port()
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        args = [sys.executable, "-c", START, "serve", "--port", str(self.port)]
        if self.workers > 1:
            args += ["--workers", str(self.workers)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                args, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Poll until the API answers (401 without a token is an answer) or fail at the
        deadline, showing the end of the server's log."""
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited at start:\n{self.tail()}")
                try:
                    if client.get(f"{self.base}/api/v1/studies").status_code == 401:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # polling interval, not a wait for an outcome
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (uvicorn and its workers) and reap it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """A clean stop (SIGTERM to the group); SIGKILL if it does not end in time."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
