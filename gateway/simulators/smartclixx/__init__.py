"""SmartClixx gift card sandbox (see WIRE.md)."""

from .app import SIMULATOR, SmartClixxSimulator

__all__ = ["SIMULATOR", "SmartClixxSimulator"]
