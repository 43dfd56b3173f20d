"""Run ``janus-logs serve`` as a real process on a free loopback port, for the web tests."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

_URL = re.compile(r"at (http://\S+?/)")


class Served:
    """A ``janus-logs serve`` process: its URL, and how to stop it."""

    def __init__(self, db: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.db = db
        self.process = subprocess.Popen(
            [sys.executable, "-m", "janus_utils", "serve", "--db", str(db), "--port", "0", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 30.0) -> str:
        found: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            found.append(self.process.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        line = found[0] if found else ""
        match = _URL.search(line)
        if match is None:
            self.stop()
            _, err = self.process.communicate(timeout=5)
            raise RuntimeError(f"janus-logs serve did not start: {line!r} {err!r}")
        url = match.group(1)
        # The socket listens before the line is printed; wait until the app answers.
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(url + "static/console.css", timeout=2)
                return url
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def run_serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """``janus-logs serve ...`` that is expected to exit by itself (a refusal)."""
    return subprocess.run(
        [sys.executable, "-m", "janus_utils", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def file_digest(path: Path) -> dict[str, str]:
    """SHA-256 of the database file and of its WAL's content.

    A reader of a WAL database may create an empty -wal (and the -shm index)
    beside it; an empty WAL holds no change, so it hashes as a missing one.
    """
    digests: dict[str, str] = {}
    for suffix in ("", "-wal"):
        target = Path(str(path) + suffix)
        digests[suffix or "db"] = hashlib.sha256(target.read_bytes() if target.exists() else b"").hexdigest()
    return digests
