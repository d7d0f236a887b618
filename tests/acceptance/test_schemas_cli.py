"""``vertector-relay schemas ...`` as CI and an operator run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def relay_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI from the source tree in ``cwd`` (``python -m relay.cli``), run from ``cwd``."""
    environment = os.environ | {"PYTHONPATH": str(cwd)} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "relay.cli", *args], cwd=cwd, env=environment,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def copy_tree(target: Path) -> Path:
    for name in ("outbox_client", "relay", "schemas"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_clean_tree_passes_the_gate() -> None:
    result = relay_cli(REPO, "schemas", "check")
    assert result.returncode == 0, result.stderr
    assert "ok: the classes match the 37 contracts in schemas" in result.stdout


def test_a_breaking_change_in_a_copy_fails_the_gate_naming_it(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    academic = tree / "outbox_client" / "events" / "academic.py"
    # Drop CourseCreatedEvent's department and make its description required.
    edit(academic, "    description: str | None = None\n    department: Text | None = None\n",
         "    description: str\n")  # fmt: skip
    result = relay_cli(tree, "schemas", "check")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "academic.course.created.v1: changed without a new schema_version" in result.stderr
    assert "academic.course.created.v1: description: optional field became required" in (
        result.stderr
    )
    assert "academic.course.created.v1: department: field removed (or renamed)" in result.stderr
    # The snapshot refuses to record it.
    snap = relay_cli(tree, "schemas", "snapshot")
    assert snap.returncode == 1 and "snapshot refused" in snap.stderr


def test_a_compatible_new_version_is_recorded_by_snapshot_then_passes(tmp_path: Path) -> None:
    tree = copy_tree(tmp_path)
    notes = tree / "outbox_client" / "events" / "notes.py"
    edit(notes, '''    event_type: Literal["notes.created"] = "notes.created"
''', '''    event_type: Literal["notes.created"] = "notes.created"
    schema_version: Literal[2] = 2
    pinned: bool = False

    @classmethod
    def upcast(cls, previous: dict) -> dict:  # type: ignore[type-arg]
        return previous | {"schema_version": 2}
''')  # fmt: skip
    # The v1 class would also have to stay (history.py); without it the gate says so.
    result = relay_cli(tree, "schemas", "check")
    assert result.returncode == 1
    assert "notes.created.v1: published, but no class declares it any more" in result.stderr
    history = tree / "outbox_client" / "events" / "history.py"
    edit(history, "PREVIOUS_VERSIONS: tuple[type[BaseEvent], ...] = (ClassScheduleCreatedEventV1,)",
         '''class NoteCreatedEventV1(BaseEvent):
    partition_key_field = "note_id"
    event_type: Literal["notes.created"] = "notes.created"
    note_id: Code
    author_id: Code
    title: Text
    content: str = ""
    course_code: Code | None = None
    tags: tuple[Code, ...] = ()


PREVIOUS_VERSIONS: tuple[type[BaseEvent], ...] = (ClassScheduleCreatedEventV1, NoteCreatedEventV1)''')  # fmt: skip
    pending = relay_cli(tree, "schemas", "check")
    assert pending.returncode == 1
    assert "notes.created.v2: compatible, but not in schemas yet" in pending.stdout
    snap = relay_cli(tree, "schemas", "snapshot")
    assert snap.returncode == 0, snap.stderr
    assert (tree / "schemas" / "notes.created.v2.json").exists()
    assert relay_cli(tree, "schemas", "check").returncode == 0
