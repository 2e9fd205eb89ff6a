"""SIGTERM on a real ``python -m app.cli serve`` process: readiness off, in-flight work finished, then exit."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.serving.helpers import expected_showers, load_npy, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class ServerProcess:
    """The service in a subprocess; its JSON log lines are collected by a reader thread."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], cwd=REPO, env={**os.environ, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout_s: float = 90.0) -> re.Match[str]:
        """The first log line matching ``pattern``; blocks on the log, not on time."""
        while True:
            try:
                line = self.lines.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError(f"no log line matched {pattern!r}; log so far:\n{''.join(self.log)}") from None
            self.log.append(line)
            if match := re.search(pattern, line):
                return match

    def close(self) -> None:
        """Kill the process if still running, and release its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._reader.join(30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def messages(self) -> list[str]:
        while not self.lines.empty():
            self.log.append(self.lines.get())
        return [json.loads(line)["message"] for line in self.log if line.startswith("{")]


def test_sigterm_turns_readiness_off_drains_in_flight_work_and_exits(latent_fn: Callable[..., Any]) -> None:
    server = ServerProcess({
        "CALOGAN_BACKEND": "fake", "CALOGAN_PORT": "0", "CALOGAN_WARMUP": "false",
        "CALOGAN_MAX_BATCH_SIZE": "32", "CALOGAN_MAX_BUFFERED_BATCHES": "1",
        "CALOGAN_DRAIN_PAUSE_S": "600",  # the test ends the pause with a second signal
        "CALOGAN_API_TOKENS": "",
    })
    try:
        port = int(server.wait_for(r"Uvicorn running on http://127\.0\.0\.1:(\d+)").group(1))
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client, \
                client.stream("POST", "/simulate", params={"energy": 100, "n": 2000, "seed": 3}) as response:
            assert response.status_code == 200
            blocks = response.iter_bytes()
            body = [next(blocks)]  # streaming has begun; 125 MB cannot all be sent before we read on
            server.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 503, what="readiness off")
            assert httpx.get(f"{url}/readyz", timeout=10).json()["reason"] == "draining"
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # alive while draining
            server.proc.send_signal(signal.SIGTERM)  # end the pause: stop accepting, finish this response
            server.wait_for("Shutting down")
            body.extend(blocks)
        cells = load_npy(b"".join(body))
        np.testing.assert_array_equal(cells[-5:], expected_showers(np.full(2000, 100.0), 3, latent_fn)[-5:])
        assert cells.shape == (2000, 25, 25, 25)
        returncode = server.proc.wait(timeout=60)
    finally:
        server.close()
    # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the exit status is the signal's.
    assert returncode in (0, -signal.SIGTERM), "".join(server.log)
    messages = server.messages()
    assert "draining" in messages
    assert "drained" in messages
