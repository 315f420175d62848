"""Shared mechanisms of the mesh: config, money, errors, Redis scripts, idempotency, auth, telemetry.

Nothing in this package imports from services/, gateway/ or mesh/.
"""
