"""Helpers shared by the integration and e2e tests (real Redis, real servers)."""
