"""Composition of RefundService from the mesh runtime's shared parts."""

from __future__ import annotations

from services.refund.logic import RefundLogic
from services.refund.servicer import RefundServicer


def build_refund(runtime) -> RefundServicer:
    return RefundServicer(
        RefundLogic(runtime.client("gateway")), runtime.idempotency, runtime.sealer, runtime.settings.merchants
    )
