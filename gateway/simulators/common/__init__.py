"""Shared simulator machinery: money parsing, strict validation, the vendor-side ledger, fault
injection, the app skeleton with its `/_sim` admin namespace, and the uvicorn runner."""
