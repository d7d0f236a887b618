"""Event contracts: JSON Schemas from the classes, the compatibility gate, the registry.

>>> from outbox_client.schemas import catalog, review
>>> review(catalog(), {}).ok
True
"""

from outbox_client.schemas.compat import Mode, breaking_changes
from outbox_client.schemas.contracts import (
    Contract,
    ContractError,
    catalog,
    contract_of,
    read_snapshot,
    write_snapshot,
)
from outbox_client.schemas.gate import Review, review

__all__ = [
    "Contract",
    "ContractError",
    "Mode",
    "Review",
    "breaking_changes",
    "catalog",
    "contract_of",
    "read_snapshot",
    "review",
    "write_snapshot",
]
