"""Development tooling, never shipped: servers from the PyPI wheels (``servers``), child-process
control (``processes``), the fault harness, workload and checker (``harness``), crash points
(``crash``) and the demo services (``demo``). Tests, ``bench/`` and ``make demo`` share it; the
wheel and the image carry only ``outbox_client``, ``relay`` and the migrations."""
