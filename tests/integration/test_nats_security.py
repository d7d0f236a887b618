"""NATSClient against nats-servers configured for TLS, user/password and token auth."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from devtools.servers import EmbeddedNats, server_dir
from outbox_client import NATSClient, NATSConfig, NATSConnectionError


@pytest.fixture
def workdir() -> Iterator[Path]:
    base = server_dir("vertector-sec-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def serve(workdir: Path, config: str) -> EmbeddedNats:
    server = EmbeddedNats(workdir / "nats", config=config)
    server.start()
    return server


@pytest.fixture
def tls_server(workdir: Path) -> Iterator[tuple[EmbeddedNats, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(workdir / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "server.pem"))
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    server = serve(
        workdir,
        f'tls {{\n  cert_file: "{workdir}/server.pem"\n  key_file: "{workdir}/server.key"\n}}\n',
    )
    yield server, workdir / "ca.pem"
    server.stop()


async def test_tls_with_the_right_ca_connects(tls_server: tuple[EmbeddedNats, Path]) -> None:
    server, ca = tls_server
    config = NATSConfig(
        servers=[f"tls://127.0.0.1:{server.port}"], enable_tls=True, tls_ca_cert_file=ca
    )
    async with NATSClient(config) as client:
        assert client.is_connected
        assert client.nc.connected_url is not None
        await client.nc.flush()


async def test_tls_with_a_wrong_ca_fails_clearly(
    tls_server: tuple[EmbeddedNats, Path], workdir: Path
) -> None:
    server, _ = tls_server
    trustme.CA().cert_pem.write_to_path(str(workdir / "other-ca.pem"))
    config = NATSConfig(
        servers=[f"tls://127.0.0.1:{server.port}"], enable_tls=True,
        tls_ca_cert_file=workdir / "other-ca.pem", reconnect_wait_seconds=0.1,
    )  # fmt: skip
    with pytest.raises(NATSConnectionError, match="cannot connect to NATS"):
        async with NATSClient(config):
            pass


@pytest.fixture
def user_server(workdir: Path) -> Iterator[EmbeddedNats]:
    server = serve(workdir, 'authorization {\n  user: "app_user"\n  password: "s3cret-pw"\n}\n')
    yield server
    server.stop()


async def test_user_and_password(user_server: EmbeddedNats) -> None:
    good = NATSConfig(
        servers=[user_server.url], enable_auth=True, username="app_user", password="s3cret-pw"
    )
    async with NATSClient(good) as client:
        await client.nc.flush()
    bad = NATSConfig(
        servers=[user_server.url], enable_auth=True, username="app_user", password="wrong",
        reconnect_wait_seconds=0.1,
    )  # fmt: skip
    with pytest.raises(NATSConnectionError) as info:
        async with NATSClient(bad):
            pass
    assert "wrong" not in str(info.value)
    assert "authorization" in str(info.value).lower()


async def test_token(workdir: Path) -> None:
    server = serve(workdir, 'authorization {\n  token: "t0ken-value"\n}\n')
    try:
        async with NATSClient(
            NATSConfig(servers=[server.url], enable_auth=True, token="t0ken-value")
        ) as client:
            await client.nc.flush()
        with pytest.raises(NATSConnectionError):
            async with NATSClient(
                NATSConfig(
                    servers=[server.url], enable_auth=True, token="nope", reconnect_wait_seconds=0.1
                )
            ):
                pass
    finally:
        server.stop()
