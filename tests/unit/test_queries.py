"""The SQL by name: every statement the code runs is a block of ``relay/sql/queries.sql``, and
the in-memory store (``tests/memstore.py``) answers each one ``PgStore`` runs, the same way and
with as many parameters. What the answers mean is held equal by ``tests/contract``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import relay
from relay.queries import all_queries
from tests.memstore import QUERIES

#: ``_call("fetch", "claim", ...)`` in PgStore, ``_run(dsn, "execute", "requeue", ...)`` in admin.
CALL = re.compile(r'"(fetch|fetchrow|fetchval|execute)",\s*"([a-z_]+)"')
RELAY = Path(relay.__file__).parent


def runs(path: Path) -> set[tuple[str, str]]:
    """(asyncpg method, query name) of every named statement ``path`` runs."""
    return {(m[1], m[2]) for m in CALL.finditer(path.read_text())}


def test_every_query_the_code_runs_is_a_block_of_queries_sql() -> None:
    used = {name for path in RELAY.rglob("*.py") for _, name in runs(path)}
    assert {"claim", "mark_sent", "requeue"} <= used, "the pattern no longer finds the calls"
    assert sorted(used - set(all_queries())) == []


def test_the_memory_store_answers_every_query_pgstore_runs_with_the_same_method() -> None:
    answered = {(method, name) for name, (method, _) in QUERIES.items()}
    assert sorted(runs(RELAY / "pgstore.py") - answered) == []
    assert sorted(set(QUERIES) - set(all_queries())) == [], "the fake answers a query no one has"


def test_each_memory_query_takes_the_parameters_of_its_sql() -> None:
    for name, (_, answer) in QUERIES.items():
        placeholders = max((int(n) for n in re.findall(r"\$(\d+)", all_queries()[name])), default=0)
        parameters = len(inspect.signature(answer).parameters) - 2  # the database and now()
        assert parameters == placeholders, f"{name}: ${placeholders} in SQL, {parameters} here"
