"""Composition root: builds the services, wires them together, runs them (all-in-one or one each)."""
