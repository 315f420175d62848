"""Composition of FulfillmentService from the mesh runtime's shared parts."""

from __future__ import annotations

from services.fulfillment.activations import ActivationStore
from services.fulfillment.logic import FulfillmentLogic
from services.fulfillment.servicer import FulfillmentServicer


def build_fulfillment(runtime) -> FulfillmentServicer:
    logic = FulfillmentLogic(
        runtime.client("gateway"), ActivationStore(runtime.redis), runtime.sealer,
        runtime.settings.card_hash_key,
    )
    return FulfillmentServicer(logic, runtime.idempotency, runtime.sealer, runtime.settings.merchants)
