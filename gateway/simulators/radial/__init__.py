"""Radial storedvalue sandbox (see WIRE.md)."""

from .app import SIMULATOR, RadialSimulator

__all__ = ["SIMULATOR", "RadialSimulator"]
