"""`python -m devtools.demo` (what `make demo` runs) end to end, and its Ctrl-C path."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

DEMO = [sys.executable, "-m", "devtools.demo"]
ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_with_nothing_lost() -> None:
    result = subprocess.run(
        [*DEMO, "--events", "400"], capture_output=True, text=True, timeout=180, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "events committed      400\n" in out  # exactly what was asked, not a few more
    assert "lost                  0" in out
    assert "duplicates (applied)  0" in out
    assert "commit -> published   p50" in out
    # The notes service's welcome notes went through its outbox and relay to the search indexer.
    written = re.search(r"notes indexed +(\d+) of (\d+) welcome notes", out)
    assert written is not None, out
    assert int(written.group(1)) == int(written.group(2)) > 0
    assert "servers stopped" in out
    assert "== next ==" in out and "make test" in out
    # Not a tty: a progress line every few seconds, never a spin once producing has ended.
    wall = float(re.search(r"wall time +([0-9.]+) s", out).group(1))  # type: ignore[union-attr]
    progress = [line for line in out.splitlines() if line.startswith("   committed")]
    assert 1 <= len(progress) <= wall / 3 + 2, f"{len(progress)} progress lines in {wall} s"


def test_demo_stops_cleanly_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [*DEMO, "--events", "100000"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it is producing
        if "committed" in line and "published" in line:
            break
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert time.monotonic() - started < 30
    assert "interrupted: stopping" in out
    assert "servers stopped, temporary data removed" in out
    leftovers = subprocess.run(["pgrep", "-f", "vertector-demo-"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "a server of the demo outlived it"
