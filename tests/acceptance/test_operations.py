"""Operations of a running `vertector-relay run`: /metrics moves, /healthz and /readyz tell
alive from ready, `check` follows them, and a NATS outage makes the relay unready, not dead."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from devtools.servers import EmbeddedNats, free_port, server_dir
from outbox_client import CourseUpdatedEvent
from tests.relayrun import apply_default_streams, engine, produce, wait_for_messages

BIN = Path(sys.executable).parent / "vertector-relay"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)}\s+([0-9.e+-]+)$"
    found = [float(m.group(1)) for m in re.finditer(pattern, text, re.M)]
    return sum(found)


async def eventually(predicate: object, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await asyncio.to_thread(predicate):  # type: ignore[arg-type]
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.2)


async def test_metrics_health_and_readiness_through_a_nats_outage(database_url: str) -> None:
    base = server_dir("vertector-ops-")
    nats_server = EmbeddedNats(base / "nats")
    nats_server.start()
    port = free_port()
    env = os.environ | {
        "OUTBOX_DATABASE_URL": database_url, "NATS_SERVERS": nats_server.url,
        "RELAY_METRICS_PORT": str(port), "RELAY_LOG_FORMAT": "json",
        "NATS_RECONNECT_WAIT_SECONDS": "0.2", "NATS_PING_INTERVAL_SECONDS": "1",
    }  # fmt: skip
    check_env = env
    proc = None
    try:
        await apply_default_streams(nats_server.url)
        proc = subprocess.Popen(
            [str(BIN), "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        await eventually(lambda: get(port, "/readyz")[0] == 200)
        async with engine(database_url) as eng:
            for i in range(0, 2000, 200):
                await produce(
                    eng,
                    [
                        CourseUpdatedEvent(course_code=f"M{j % 40}", credits=1)
                        for j in range(i, i + 200)
                    ],
                )
            assert await wait_for_messages(nats_server.url, 2000) == 2000

            def settled() -> bool:
                text = get(port, "/metrics")[1]
                return metric(text, "vertector_relay_backlog") == 0 and metric(
                    text, "vertector_relay_events_published_total",
                    '{event_type="academic.course.updated",stream="ACADEMIC_EVENTS"}',
                ) == 2000  # fmt: skip

            await eventually(settled)
            text = get(port, "/metrics")[1]
            assert metric(text, "vertector_relay_commit_to_publish_seconds_count") == 2000
            assert metric(text, "vertector_relay_nats_connected") == 1
            assert metric(text, "vertector_relay_ready") == 1
            assert metric(text, "vertector_relay_keys_backing_off") == 0
            # The standard process and Python collectors are there too.
            assert metric(text, "process_resident_memory_bytes") > 0
            assert "python_info{" in text and "python_gc_collections_total{" in text
            ok = subprocess.run([str(BIN), "check"], env=check_env, capture_output=True, text=True)
            assert ok.returncode == 0 and ok.stdout.strip() == "ready"

            nats_server.kill()  # the outage
            await eventually(lambda: get(port, "/readyz")[0] == 503)
            assert "not connected to NATS" in get(port, "/readyz")[1]
            assert get(port, "/healthz")[0] == 200, "a NATS outage must not make the relay dead"
            down = subprocess.run(
                [str(BIN), "check"], env=check_env, capture_output=True, text=True
            )
            assert down.returncode == 1 and "not connected to NATS" in down.stdout
            live = subprocess.run(
                [str(BIN), "check", "--live"], env=check_env, capture_output=True, text=True
            )
            assert live.returncode == 0
            await produce(eng, [CourseUpdatedEvent(course_code="AFTER", credits=2)])

            nats_server.start()  # same port, same store: JetStream state survives
            await eventually(lambda: get(port, "/readyz")[0] == 200, timeout=60)
            assert await wait_for_messages(nats_server.url, 2001, timeout=60) == 2001
        assert proc.poll() is None, "the relay exited during the outage"
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        nats_server.stop()
        shutil.rmtree(base, ignore_errors=True)
    gone = subprocess.run([str(BIN), "check"], env=check_env, capture_output=True, text=True)
    assert gone.returncode == 1 and "no relay answers" in gone.stdout
