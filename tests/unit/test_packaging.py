"""What ships is what runs: the wheel carries the library, the relay and the migrations, and
none of the dev tooling (embedded servers, demo, fault harness, crash points), tests or bench."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from relay.cli import _parser

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """The wheel's file names, and what the build printed."""
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (wheel,) = out.glob("vertector_outbox-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist(), build.stdout + build.stderr


@pytest.fixture(scope="module")
def wheel_files(built: tuple[list[str], str]) -> list[str]:
    return built[0]


def test_the_build_warns_of_nothing(built: tuple[list[str], str]) -> None:
    assert "Warning" not in built[1], built[1]


def test_the_wheel_carries_the_license(wheel_files: list[str]) -> None:
    assert "vertector_outbox-0.1.0.dist-info/licenses/LICENSE" in wheel_files


def test_wheel_ships_only_what_runs_in_production(wheel_files: list[str]) -> None:
    tops = {name.split("/")[0] for name in wheel_files if not name.startswith("vertector_outbox-")}
    assert tops == {"outbox_client", "relay", "vertector_migrations"}
    assert "relay/sql/queries.sql" in wheel_files
    assert "vertector_migrations/versions/0001_outbox.py" in wheel_files
    for name in wheel_files:
        assert not any(part in name for part in ("embedded", "demo", "crash", "harness", "fault"))


def test_the_cli_offers_no_command_that_needs_dev_tooling() -> None:
    commands = _parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert "demo" not in commands
