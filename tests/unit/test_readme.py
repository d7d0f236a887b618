"""The README stays true to the repository: every file it cites exists, and its settings table
names every setting the relay reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from relay.settings import CommonSettings, RelaySettings

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

#: `path/like/this.ext` or `dir/` in backticks; commands and module paths are not files.
_CITED = re.compile(
    r"`((?:[\w.-]+/)+[\w.-]*|[\w-]+\.(?:md|py|sql|json|yml|yaml|toml|ini|conf|txt))`"
)


def _exists(path: str) -> bool:
    """At the root, or (as the Layout section names them) inside one of the packages."""
    if (ROOT / path).exists():
        return True
    return any(
        (ROOT / top / path).exists()
        for top in ("outbox_client", "relay", "devtools", "tests", "examples", "deploy")
    )


def test_every_file_the_readme_cites_is_in_the_repository() -> None:
    cited = {m.group(1) for m in _CITED.finditer(README)}
    assert cited, "the pattern found nothing: it is broken"
    missing = sorted(path for path in cited if not _exists(path))
    assert missing == [], f"README cites files that are not in the repository: {missing}"


def test_the_settings_table_lists_every_setting() -> None:
    for name, field in (CommonSettings.model_fields | RelaySettings.model_fields).items():
        alias = field.validation_alias
        env = alias.choices[0] if alias is not None else f"RELAY_{name.upper()}"  # type: ignore[union-attr]
        assert f"`{env}`" in README, f"README does not document {env}"
