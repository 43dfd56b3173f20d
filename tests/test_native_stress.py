"""The C-level stress program of the ring, built with ThreadSanitizer, runs clean."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parent.parent / "_native"


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("gcc") is None, reason="needs make and gcc")
class TestThreadSanitizer:
    def test_stress_under_tsan_is_clean(self, tmp_path: Path) -> None:
        """4 threads x 200,000 records through an 8 KiB ring: exactly once, in order, no race reported."""
        exe = tmp_path / "ring_stress_tsan"
        build = subprocess.run(
            ["gcc", "-std=gnu11", "-O1", "-g", "-fsanitize=thread", "-o", str(exe),
             str(NATIVE / "ring.c"), str(NATIVE / "ring_stress.c"), "-lpthread"],
            capture_output=True, text=True,
        )
        if build.returncode != 0 and "tsan" in build.stderr.lower():
            pytest.skip(f"ThreadSanitizer runtime not available: {build.stderr.strip()[:200]}")
        assert 0 == build.returncode, build.stderr
        run = subprocess.run(
            [str(exe)], capture_output=True, text=True,
            env={"TSAN_OPTIONS": "halt_on_error=1 exitcode=66"}, timeout=300,
        )
        assert "WARNING: ThreadSanitizer" not in run.stderr
        assert 0 == run.returncode, run.stderr[-2000:]
        assert run.stdout.startswith("ok: 800000 records from 4 producers")
