"""Clutch gift card sandbox (see WIRE.md)."""

from .app import SIMULATOR, ClutchSimulator

__all__ = ["SIMULATOR", "ClutchSimulator"]
