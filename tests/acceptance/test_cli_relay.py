"""``vertector-relay`` as a real subprocess: SIGTERM mid-stream, restart, exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from outbox_client import CourseUpdatedEvent
from tests.relayrun import engine, event_ids, produce, stream_messages, wait_for_messages

BIN = Path(sys.executable).parent / "vertector-relay"


def relay_env(database_url: str, nats_url: str, **extra: str) -> dict[str, str]:
    return os.environ | {
        "OUTBOX_DATABASE_URL": database_url,
        "NATS_SERVERS": nats_url,
        "RELAY_LOG_FORMAT": "json",
        "RELAY_BATCH_SIZE": "200",
        "RELAY_METRICS_PORT": "0",
        **extra,
    }


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


async def test_streams_apply_then_sigterm_mid_stream_and_restart_delivers_exactly_once(
    database_url: str, nats_url: str
) -> None:
    env = relay_env(database_url, nats_url)
    applied = await asyncio.to_thread(
        subprocess.run, [str(BIN), "streams", "apply"], env=env, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    assert "ACADEMIC_EVENTS: created" in applied.stdout

    events = [CourseUpdatedEvent(course_code=f"C{i % 50}", credits=i % 9) for i in range(6000)]
    proc = start(env)
    async with engine(database_url) as eng:
        for i in range(0, 3000, 100):
            await produce(eng, events[i : i + 100])
        await wait_for_messages(nats_url, 500)
        proc.send_signal(signal.SIGTERM)  # mid-stream: the backlog is still draining
        stopped = time.monotonic()
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0, output
        assert time.monotonic() - stopped < 25
        assert '"event": "relay.stopped"' in output
        for i in range(3000, 6000, 100):
            await produce(eng, events[i : i + 100])

    proc = start(env)
    try:
        assert await wait_for_messages(nats_url, 6000, timeout=60) == 6000
        await asyncio.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, output
    ids = event_ids(await stream_messages(nats_url))
    assert len(ids) == len(set(ids)) == 6000
    assert set(ids) == {e.event_id for e in events}


def test_run_with_bad_settings_names_the_variable(database_url: str) -> None:
    env = relay_env(database_url, "nats://127.0.0.1:1", RELAY_BATCH_SIZE="0")
    result = subprocess.run([str(BIN), "run"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "RELAY_BATCH_SIZE" in result.stderr


def test_run_without_database_url_says_so() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTBOX_DATABASE_URL"}
    result = subprocess.run([str(BIN), "run"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "OUTBOX_DATABASE_URL: is not set" in result.stderr


def test_help_names_every_variable() -> None:
    from relay.settings import RelaySettings, env_name

    out = subprocess.run([str(BIN), "run", "--help"], capture_output=True, text=True).stdout
    for field in RelaySettings.model_fields:
        assert env_name(field) in out
    for name in (
        "NATS_SERVERS",
        "NATS_USERNAME",
        "NATS_PASSWORD",
        "NATS_TOKEN",
        "NATS_TLS_CA_CERT_FILE",
    ):
        assert name in out
