"""Copy a compose file without its published ports: ``without_ports.py SOURCE TARGET``.

The deploy check runs every container with host networking, where there is nothing to
publish, and docker-compose 1.29 refuses port bindings on a host-network container (its file
format has no way for an override file to remove them)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

compose = yaml.safe_load(Path(sys.argv[1]).read_text())
for service in compose["services"].values():
    service.pop("ports", None)
Path(sys.argv[2]).write_text(yaml.safe_dump(compose, sort_keys=False))
