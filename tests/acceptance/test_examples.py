"""The examples run as documented: publisher through the outbox, relay, consumer with inbox."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.relayrun import apply_default_streams, running_relay, wait_for_messages

ROOT = Path(__file__).resolve().parents[2]


def run(script: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_publisher_relay_consumer_examples(database_url: str, nats_url: str) -> None:
    await apply_default_streams(nats_url)
    env = os.environ | {"OUTBOX_DATABASE_URL": database_url, "NATS_SERVERS": nats_url}
    published = await asyncio.to_thread(run, "publisher_example.py", env)
    assert published.returncode == 0, published.stderr
    assert published.stdout.count("with 3 events") == 3
    async with running_relay(database_url, nats_url):
        assert await wait_for_messages(nats_url, 9) == 9
    consumed = await asyncio.to_thread(run, "consumer_example.py", env, "9")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.count("applied") == 9
    assert "academic.course.created" in consumed.stdout


def test_examples_say_what_is_missing() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUTBOX_DATABASE_URL"}
    for script in ("publisher_example.py", "consumer_example.py"):
        result = run(script, env)
        assert result.returncode == 2 and "OUTBOX_DATABASE_URL" in result.stderr
