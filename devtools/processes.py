"""Child processes that tests, benchmarks and the demo start, stop, kill, pause and resume: the
embedded servers (``devtools.servers``) and relays run as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

#: The repository root: ``devtools`` is not installed, so ``python -m devtools...`` runs from here.
ROOT = Path(__file__).resolve().parent.parent
RELAY_BIN = Path(sys.executable).parent / "vertector-relay"


class ChildProcess:
    """One child process; every exit status it had is kept in ``exits``."""

    process: subprocess.Popen[bytes] | None = None

    def __init__(self) -> None:
        self.exits: list[int] = []

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None or self.process.poll() is not None:
            raise ProcessLookupError("the process is not running")
        return self.process.pid

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (a paused process too), then reap."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.kill()
        self.reap()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Send ``sig`` (after SIGCONT, so a paused process can act on it); SIGKILL after
        ``timeout`` seconds."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.reap()

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reap(self) -> None:
        if self.process is not None:
            self.exits.append(self.process.wait())
            self.process = None


class RelayProcess(ChildProcess):
    """``vertector-relay run`` as a child process; its output goes to ``log``.

    >>> relay = RelayProcess(db, nats, "r1", RELAY_BATCH_SIZE="500").start()  # doctest: +SKIP
    >>> relay.stop()  # doctest: +SKIP
    """

    def __init__(self, database_url: str, nats_url: str, name: str, **env: str) -> None:
        super().__init__()
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"relay-{name}-", suffix=".log")[1])
        self.env = os.environ | {
            "OUTBOX_DATABASE_URL": database_url,
            "NATS_SERVERS": nats_url,
            "RELAY_INSTANCE_NAME": name,
            "RELAY_METRICS_PORT": "-1",
            "RELAY_LOG_FORMAT": "json",
            **env,
        }

    def start(self, **env: str) -> Self:
        return self._spawn([str(RELAY_BIN), "run"], env)

    async def crash_at(self, point: str) -> None:
        """Run until the relay SIGKILLs itself at the named checkpoint (asserted)."""
        self._spawn([sys.executable, "-m", "devtools.crash", point], {})
        assert self.process is not None
        await asyncio.to_thread(self.process.wait, 60)
        self.reap()
        assert self.exits[-1] == -9, f"the relay did not reach {point}:\n{self.tail()}"

    def stop(self) -> None:
        """SIGTERM and wait for the graceful exit (SIGKILL after 30 s)."""
        self.terminate(signal.SIGTERM, 30)

    async def wait_for_log(self, text: str, timeout: float = 60) -> None:
        """Wait until the relay's output contains ``text``: a fault test waits for what the
        relay did, not for a guess of how long it takes on a busy machine."""
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the relay's output after {timeout} s:\n"
                                     f"{self.tail()}")  # fmt: skip
            await asyncio.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def _spawn(self, argv: list[str], env: dict[str, str]) -> Self:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, env=self.env | env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self


class ModuleProcess(ChildProcess):
    """``python -m MODULE ARGS...`` from the repository root; its output goes to ``log``.

    >>> consumer = ModuleProcess("examples.notes_consumer", env={...}).start()  # doctest: +SKIP
    """

    def __init__(self, module: str, *args: str, env: dict[str, str]) -> None:
        super().__init__()
        self.argv = [sys.executable, "-m", module, *args]
        self.env = os.environ | env
        self.log = Path(tempfile.mkstemp(prefix=f"{module}-", suffix=".log")[1])

    def start(self) -> Self:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    async def wait(self, timeout: float) -> int:
        """Wait for the exit (asserting it comes within ``timeout`` s); its status."""
        assert self.process is not None
        await asyncio.to_thread(self.process.wait, timeout)
        self.reap()
        return self.exits[-1]

    def output(self) -> str:
        return self.log.read_text(errors="replace")
