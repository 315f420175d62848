"""HTTP sandboxes that speak each gift card vendor's wire API, for tests and demos only.

Production code never imports this package. Each vendor package holds its routes and its wire
document (WIRE.md); `common/` holds the one ledger, fault-injection, admin API and runner they share.

    from gateway.simulators import start_simulator
    sim = start_simulator("paytronix")          # 127.0.0.1, free port, background thread
    sim.base_url                                 # "http://127.0.0.1:PORT"
    sim.stop()

or from a shell: `python -m gateway.simulators paytronix --port 8081`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .common.app import Simulator
    from .common.faults import FaultConfig
    from .common.server import RunningSimulator

VENDORS = ("paytronix", "ackroo", "radial", "clutch", "smartclixx")


def create_simulator(vendor: str, *, options: Mapping[str, Any] | None = None,
                     faults: "FaultConfig | Mapping[str, Any] | None" = None) -> "Simulator":
    """A fresh simulator (own ledger, own fault settings); serve its `.app` with any ASGI server."""
    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; one of {', '.join(VENDORS)}")
    module = importlib.import_module(f"{__name__}.{vendor}")
    return module.SIMULATOR(options=options, faults=faults)


def start_simulator(vendor: str, port: int = 0, *, host: str = "127.0.0.1",
                    options: Mapping[str, Any] | None = None,
                    faults: "FaultConfig | Mapping[str, Any] | None" = None,
                    cards: Sequence[Mapping[str, Any]] = ()) -> "RunningSimulator":
    """Start `vendor`'s simulator on a background thread and return it once it accepts connections.

    The result has `base_url`, `port`, `simulator` (with `.ledger` for direct inspection) and
    `stop()`; it is also a context manager. `cards` are seeded as by `POST /_sim/cards`.
    """
    from .common.server import RunningSimulator

    simulator = create_simulator(vendor, options=options, faults=faults)
    for spec in cards:
        simulator.seed_card(dict(spec))
    return RunningSimulator(simulator, host=host, port=port).start()


__all__ = ["VENDORS", "create_simulator", "start_simulator"]
