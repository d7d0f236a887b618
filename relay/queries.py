"""Named SQL from ``relay/sql/queries.sql`` (blocks headed ``-- name --``)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_]+) --$", re.M)


@cache
def all_queries() -> dict[str, str]:
    """Every named statement, comments and blank lines kept as written."""
    text = resources.files("relay").joinpath("sql/queries.sql").read_text()
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> str:
    """The statement called ``name``; a KeyError names the missing block."""
    try:
        return all_queries()[name]
    except KeyError:
        raise KeyError(f"no '-- {name} --' block in relay/sql/queries.sql") from None
