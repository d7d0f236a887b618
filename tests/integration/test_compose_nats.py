"""The compose file's NATS, started the way compose starts it: its command renders the passwords
into deploy/nats/relay-permissions.conf and runs nats-server on deploy/nats/nats.conf (the
wheel's nats-server stands in for the image's). No client gets in without its credentials."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import nats
import nats.errors
import pytest
import yaml

from devtools.servers import free_port, nats_server_binary

ROOT = Path(__file__).resolve().parents[2]


async def refused(url: str) -> bool:
    async def quiet(exc: Exception) -> None:
        pass

    try:
        client = await nats.connect(url, allow_reconnect=False, connect_timeout=5, error_cb=quiet)
    except nats.errors.Error as exc:
        return "authorization violation" in str(exc).lower()
    await client.close()
    return False


def wait_healthy(server: subprocess.Popen[bytes], monitor: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, log.read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nats did not answer /healthz in 30 s: {log}")
            time.sleep(0.1)


async def test_compose_nats_refuses_anonymous_clients_and_admits_its_users(tmp_path: Path) -> None:
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["nats"]
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    for name in ("nats.conf", "relay-permissions.conf"):
        text = (ROOT / "deploy/nats" / name).read_text()
        (etc / name).write_text(text.replace("/data/jetstream", str(tmp_path / "js")))
    script = (
        service["command"][0]
        .replace("$$", "$")  # compose's escape for a literal $
        .replace("/etc/nats/", f"{etc}/")
        .replace("/tmp/nats", str(run))
        .replace("exec nats-server", f"exec {nats_server_binary()}")
    )
    port, monitor = free_port(), free_port()
    environment = {
        **os.environ,
        "ADMIN_PASSWORD": "admin-pw",
        "RELAY_PASSWORD": "relay-pw",
        "NATS_SERVER_ARGS": f"-a 127.0.0.1 -p {port} -m {monitor}",
    }
    assert set(service["environment"]) <= set(environment)
    log = (tmp_path / "nats.log").open("wb")
    server = subprocess.Popen(["/bin/sh", "-c", script], env=environment, stdout=log, stderr=log)
    try:
        wait_healthy(server, monitor, tmp_path / "nats.log")
        url = f"127.0.0.1:{port}"
        assert await refused(f"nats://{url}")
        assert await refused(f"nats://relay:wrong@{url}")
        for user, password in (("relay", "relay-pw"), ("admin", "admin-pw")):
            client = await nats.connect(f"nats://{user}:{password}@{url}", connect_timeout=5)
            assert client.is_connected
            await client.close()
        admin = await nats.connect(f"nats://admin:admin-pw@{url}", connect_timeout=5)
        try:
            info = await admin.jetstream().account_info()
            assert info.limits is not None  # JetStream is enabled for the users' account
        finally:
            await admin.close()
    finally:
        server.terminate()
        server.wait(30)
        log.close()
