"""The native provider: the mesh's own stored-value ledger on Redis (see ledger.py)."""
