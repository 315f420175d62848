"""What each service is: its proto name, how to register it, and how to build its servicer from
clients of the services it depends on. Services whose issue has not landed yet are served by the
generated base servicer, which answers UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from giftcard.authorization.v1 import authorization_pb2, authorization_pb2_grpc
from giftcard.balance.v1 import balance_pb2, balance_pb2_grpc
from giftcard.fulfillment.v1 import fulfillment_pb2, fulfillment_pb2_grpc
from giftcard.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from giftcard.refund.v1 import refund_pb2, refund_pb2_grpc
from giftcard.settlement.v1 import settlement_pb2, settlement_pb2_grpc


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    full_name: str
    add_to_server: Callable[[Any, Any], None]
    stub: type
    # Services this one calls, by name.
    depends_on: tuple[str, ...]


def _full_name(module, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name


SPECS: dict[str, ServiceSpec] = {
    spec.name: spec
    for spec in (
        ServiceSpec("gateway", _full_name(gateway_pb2, "ProviderGatewayService"),
                    gateway_pb2_grpc.add_ProviderGatewayServiceServicer_to_server,
                    gateway_pb2_grpc.ProviderGatewayServiceStub, ()),
        ServiceSpec("balance", _full_name(balance_pb2, "BalanceService"),
                    balance_pb2_grpc.add_BalanceServiceServicer_to_server,
                    balance_pb2_grpc.BalanceServiceStub, ("gateway",)),
        ServiceSpec("authorization", _full_name(authorization_pb2, "AuthorizationService"),
                    authorization_pb2_grpc.add_AuthorizationServiceServicer_to_server,
                    authorization_pb2_grpc.AuthorizationServiceStub, ("gateway",)),
        ServiceSpec("fulfillment", _full_name(fulfillment_pb2, "FulfillmentService"),
                    fulfillment_pb2_grpc.add_FulfillmentServiceServicer_to_server,
                    fulfillment_pb2_grpc.FulfillmentServiceStub, ("gateway",)),
        ServiceSpec("settlement", _full_name(settlement_pb2, "SettlementService"),
                    settlement_pb2_grpc.add_SettlementServiceServicer_to_server,
                    settlement_pb2_grpc.SettlementServiceStub, ("gateway",)),
        ServiceSpec("refund", _full_name(refund_pb2, "RefundService"),
                    refund_pb2_grpc.add_RefundServiceServicer_to_server,
                    refund_pb2_grpc.RefundServiceStub, ("gateway",)),
    )
}

# Generated base servicers: every RPC raises NotImplementedError -> UNIMPLEMENTED (see interceptor).
NOT_YET_IMPLEMENTED: dict[str, type] = {}
