"""Paytronix gift service sandbox (see WIRE.md)."""

from .app import SIMULATOR, PaytronixSimulator

__all__ = ["SIMULATOR", "PaytronixSimulator"]
