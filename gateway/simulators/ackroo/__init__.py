"""Ackroo gift API sandbox (see WIRE.md)."""

from .app import SIMULATOR, AckrooSimulator

__all__ = ["SIMULATOR", "AckrooSimulator"]
