"""``vertector-relay`` as a user meets it: options, bounded commands when a server does not
answer, SIGTERM at any moment of start-up, secrets never printed, quiet clean stops, and
several relays on one host."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from devtools.servers import EmbeddedNats, free_port, server_dir
from tests.relayrun import apply_default_streams

BIN = Path(sys.executable).parent / "vertector-relay"
SECRET = "hunter2-Sekret"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "RELAY_", "OUTBOX_"))}
    return env | {"RELAY_LOG_FORMAT": "json", **extra}


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def blackhole() -> Iterator[int]:
    """A port that accepts connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


class Relay:
    """``vertector-relay run`` as a subprocess, its output collected line by line."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.args = args
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> Relay:
        self.proc = await asyncio.create_subprocess_exec(
            str(BIN), "run", *self.args, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(line.decode().rstrip("\n"))

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    async def wait_for(self, event: str, timeout: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.events():
                if entry["event"] == event:
                    return entry
            assert self.proc is not None
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {event} in:\n" + "\n".join(self.lines))

    async def stop(self, timeout: float = 30) -> int:
        assert self.proc is not None and self._reader is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        await self._reader
        return code


@contextlib.asynccontextmanager
async def relay(env: dict[str, str], *args: str) -> AsyncIterator[Relay]:
    r = await Relay(env, *args).start()
    try:
        yield r
    finally:
        if r.proc is not None and r.proc.returncode is None:
            r.proc.kill()
            await r.proc.wait()


def test_version_log_level_and_options_after_the_command() -> None:
    env = clean_env()
    version = cli("--version", env=env)
    assert version.returncode == 0
    assert re.fullmatch(r"vertector-relay \d+\.\d+\.\d+\S*\n", version.stdout)

    bad = cli("status", "--log-level", "loud", env=env)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "--log-level" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr

    bad_env = cli("status", env=env | {"RELAY_LOG_LEVEL": "loud"})
    assert bad_env.returncode == 2
    assert bad_env.stderr.count("\n") == 1 and "RELAY_LOG_LEVEL" in bad_env.stderr

    # Global options after the command name; the level is honoured (DEBUG shows asyncio's
    # selector line, which INFO does not), and RELAY_LOG_LEVEL does the same.
    after = cli("status", "--log-level", "debug", "--log-format", "console", env=env)
    assert after.returncode == 2 and "OUTBOX_DATABASE_URL: is not set" in after.stderr
    assert "debug" in after.stderr and "{" not in after.stderr.splitlines()[0]
    by_env = cli("status", env=env | {"RELAY_LOG_LEVEL": "debug"})
    assert '"level": "debug"' in by_env.stderr
    quiet = cli("status", env=env)
    assert '"level": "debug"' not in quiet.stderr


async def test_commands_end_in_bounded_time_with_the_cause_when_nothing_answers() -> None:
    """Every command but ``run`` gives up: NATS within 2 x (connect timeout + reconnect wait)
    per server (15 s by default), PostgreSQL within 10 s, with one line and a non-zero exit."""
    with blackhole() as silent:
        refused = free_port()
        cases = {
            "silent NATS": (f"nats://127.0.0.1:{silent}", f"postgresql://u@127.0.0.1:{refused}/x"),
            "no NATS": (f"nats://127.0.0.1:{refused}", f"postgresql://u@127.0.0.1:{silent}/x"),
        }
        commands = [
            ("check", "--direct"),
            ("status",),
            ("streams", "apply"),
            ("consumer-dead-letters", "list"),
            ("dead-letters", "list"),
            ("replay", "--from-id", "1", "--to-id", "2"),
            ("migrate",),
        ]
        runs = []
        for case, (nats_url, db_url) in cases.items():
            env = clean_env(
                NATS_SERVERS=nats_url, OUTBOX_DATABASE_URL=db_url, RELAY_LOG_LEVEL="WARNING"
            )
            for args in commands:
                runs.append((case, args, asyncio.to_thread(_timed, args, env)))
        results = await asyncio.gather(*(run for _, _, run in runs))
    for (case, args, _), (result, seconds) in zip(runs, results, strict=True):
        output = (result.stdout + result.stderr).strip()
        where = f"{case}: {' '.join(args)} -> {output!r}"
        assert result.returncode != 0, where
        assert seconds < 45, where
        # one line with the cause (replay may warn first that it could not read NATS)
        assert len([ln for ln in output.splitlines() if not ln.startswith("warning:")]) == 1, where
        assert "Traceback" not in output, where
        assert re.search(r"no answer within \d+ s|Connect call failed|refused", output), where


def _timed(
    args: tuple[str, ...], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = cli(*args, env=env, timeout=120)
    return result, time.monotonic() - started


@pytest.fixture
def auth_nats() -> Iterator[EmbeddedNats]:
    base = server_dir("vertector-auth-")
    config = 'authorization {\n  user: "relay"\n  password: "right-pw"\n}\n'
    server = EmbeddedNats(base / "nats", config=config)
    server.start()
    yield server
    server.stop()


async def test_run_reports_why_it_cannot_connect_and_stops_at_once_on_sigterm(
    database_url: str, auth_nats: EmbeddedNats
) -> None:
    with blackhole() as silent:
        for name, extra in {
            "wrong password": {"NATS_SERVERS": auth_nats.url, "NATS_ENABLE_AUTH": "true",
                               "NATS_USERNAME": "relay", "NATS_PASSWORD": SECRET},
            "silent server": {"NATS_SERVERS": f"nats://127.0.0.1:{silent}"},
        }.items():  # fmt: skip
            env = clean_env(OUTBOX_DATABASE_URL=database_url, RELAY_METRICS_PORT="0", **extra)
            async with relay(env) as r:
                if name == "wrong password":
                    entry = await r.wait_for("relay.nats.unavailable")
                    assert "authorization violation" in str(entry["error"]).lower(), entry
                else:
                    await r.wait_for("relay.store.connected")
                    await asyncio.sleep(1)  # inside the first, still unanswered, attempt
                signalled = time.monotonic()
                code = await r.stop()
                waited = time.monotonic() - signalled
            assert code == 0, (name, r.lines)
            assert waited < 5, (name, waited, r.lines)
            assert r.events()[-1]["event"] == "relay.stopped", (name, r.lines)
            assert SECRET not in "\n".join(r.lines)


async def test_a_clean_stop_of_run_status_and_check_prints_no_warnings(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    env = clean_env(OUTBOX_DATABASE_URL=database_url, NATS_SERVERS=nats_url, RELAY_METRICS_PORT="0")
    async with relay(env) as r:
        await r.wait_for("relay.started")
        status = await asyncio.to_thread(cli, "status", env=env)
        check = await asyncio.to_thread(cli, "check", "--direct", env=env)
        assert await r.stop() == 0
    assert status.returncode == 0 and check.returncode == 0, (status.stderr, check.stderr)
    for output in (r.lines, status.stderr.splitlines(), check.stderr.splitlines()):
        loud = [
            line for line in output
            # a single-node stream's fsync warning is about the deployment, and is right
            if '"level": "info"' not in line and "relay.config.risky" not in line
        ]  # fmt: skip
        assert loud == [], output


async def test_secrets_in_urls_are_never_printed(database_url: str, nats_url: str) -> None:
    """Every output of a run, its commands and its errors, with passwords in both URLs."""
    await apply_default_streams(nats_url)
    secret_db = make_url(database_url).set(password=SECRET).render_as_string(hide_password=False)
    host = nats_url.split("://", 1)[1]
    env = clean_env(
        OUTBOX_DATABASE_URL=secret_db, NATS_SERVERS=f"nats://relay:{SECRET}@{host}",
        NATS_ENABLE_AUTH="true", RELAY_METRICS_PORT="0", RELAY_LOG_LEVEL="DEBUG",
    )  # fmt: skip
    outputs: list[str] = []
    async with relay(env) as r:
        await r.wait_for("relay.started")
        for args in (("status",), ("check", "--direct"), ("streams", "apply"),
                     ("dead-letters", "list"), ("consumer-dead-letters", "list"), ("--help",),
                     ("run", "--help")):  # fmt: skip
            done = await asyncio.to_thread(cli, *args, env=env)
            outputs += [done.stdout, done.stderr]
        assert await r.stop() == 0
    outputs += r.lines
    refused = free_port()
    failing = {
        "NATS_SERVERS": f"nats://relay:{SECRET}@127.0.0.1:{refused}",
        "OUTBOX_DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:{refused}/db",
    }
    for args in (("status",), ("check", "--direct"), ("streams", "apply"), ("migrate",)):
        done = await asyncio.to_thread(cli, *args, env=env | failing)
        outputs += [done.stdout, done.stderr]
        assert done.returncode != 0
    for bad in ({"OUTBOX_DATABASE_URL": f"mysql://app:{SECRET}@db/x"},
                {"NATS_SERVERS": f"relay:{SECRET}@nats:4222"}):  # fmt: skip
        done = await asyncio.to_thread(cli, "status", env=env | bad)
        outputs += [done.stdout, done.stderr]
        assert done.returncode == 2
    everything = "\n".join(outputs)
    assert "relay:***@" in everything  # the URLs were shown, masked
    assert SECRET not in everything


async def test_two_relays_on_one_host_with_the_documented_setting_share_the_partitions(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    env = clean_env(OUTBOX_DATABASE_URL=database_url, NATS_SERVERS=nats_url, RELAY_METRICS_PORT="0")
    async with relay(env, "--instance-name", "a") as a, relay(env, "--instance-name", "b") as b:
        ports = {(await x.wait_for("relay.http.listening"))["port"] for x in (a, b)}
        assert len(ports) == 2
        deadline = time.monotonic() + 60
        while True:
            status = await asyncio.to_thread(cli, "status", "--json", env=env)
            assert status.returncode == 0, status.stderr
            owned = {i["name"]: i["partitions"] for i in json.loads(status.stdout)["instances"]}
            if owned == {"a": 32, "b": 32}:
                break
            assert time.monotonic() < deadline, owned
            await asyncio.sleep(0.5)
        assert a.proc is not None and b.proc is not None
        assert a.proc.returncode is None and b.proc.returncode is None
        assert await a.stop() == 0 and await b.stop() == 0


async def test_a_second_relay_on_a_taken_port_fails_at_once_naming_port_and_setting(
    database_url: str, nats_url: str
) -> None:
    await apply_default_streams(nats_url)
    port = free_port()
    env = clean_env(
        OUTBOX_DATABASE_URL=database_url, NATS_SERVERS=nats_url, RELAY_METRICS_PORT=str(port)
    )
    async with relay(env) as first:
        await first.wait_for("relay.started")
        started = time.monotonic()
        second = await asyncio.to_thread(cli, "run", env=env)
        assert time.monotonic() - started < 15
        assert await first.stop() == 0
    assert second.returncode == 2
    assert second.stdout == ""
    errors = [line for line in second.stderr.splitlines() if not line.startswith("{")]
    assert len(errors) == 1, second.stderr
    assert f"127.0.0.1:{port}" in errors[0] and "RELAY_METRICS_PORT" in errors[0]
    assert "Traceback" not in second.stderr
    assert "relay.store.connected" not in second.stderr  # refused before connecting anything
