"""The mesh's error model: domain exceptions carrying a gRPC code and an ErrorInfo reason.

Servicers raise `MeshError` (or a subclass); one interceptor turns it into a `google.rpc.Status`
with an `ErrorInfo` detail (and a `BadRequest` detail naming the field for invalid input), so
callers branch on `reason`, never on message text. Messages never contain card data.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "giftcard.mesh"


@dataclass
class MeshError(Exception):
    code: grpc.StatusCode
    reason: str
    message: str
    field: str | None = None
    metadata: dict[str, str] = dataclass_field(default_factory=dict)
    retryable: bool = False

    def __post_init__(self) -> None:
        super().__init__(f"{self.reason}: {self.message}")

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN)
        for key, value in self.metadata.items():
            info.metadata[key] = str(value)
        if self.field:
            info.metadata["field"] = self.field
        details = [_pack(info)]
        if self.field:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=self.message, reason=self.reason
            )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        if self.retryable:
            details.append(_pack(error_details_pb2.RetryInfo()))
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=details
        )


def _pack(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def invalid_argument(field: str, message: str, reason: str = "INVALID_ARGUMENT") -> MeshError:
    return MeshError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, field=field)


def not_found(what: str, reason: str = "NOT_FOUND") -> MeshError:
    return MeshError(grpc.StatusCode.NOT_FOUND, reason, f"{what} not found")


def failed_precondition(reason: str, message: str, **metadata: str) -> MeshError:
    return MeshError(grpc.StatusCode.FAILED_PRECONDITION, reason, message, metadata=metadata)


def unauthenticated(message: str = "missing or invalid API key") -> MeshError:
    return MeshError(grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED", message)


def unavailable(reason: str, message: str) -> MeshError:
    return MeshError(grpc.StatusCode.UNAVAILABLE, reason, message, retryable=True)


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo detail of a status, if any (used by clients and tests)."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


# Reasons used across the mesh (DESIGN.md section 3). Kept as constants so a typo is a NameError.
INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
CARD_ALREADY_ACTIVE = "CARD_ALREADY_ACTIVE"
CARD_INACTIVE = "CARD_INACTIVE"
CARD_NOT_FOUND = "CARD_NOT_FOUND"
CARD_LOCKED = "CARD_LOCKED"
INVALID_PIN = "INVALID_PIN"
HOLD_EXPIRED = "HOLD_EXPIRED"
HOLD_NOT_OPEN = "HOLD_NOT_OPEN"
HOLD_NOT_FOUND = "HOLD_NOT_FOUND"
AMOUNT_EXCEEDS_OPEN = "AMOUNT_EXCEEDS_OPEN"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
TRANSACTION_REVERSED = "TRANSACTION_REVERSED"
TRANSACTION_REFUNDED = "TRANSACTION_REFUNDED"
PROVIDER_TIMEOUT = "PROVIDER_TIMEOUT"
PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"
PROVIDER_ERROR = "PROVIDER_ERROR"
OPERATION_NOT_SUPPORTED = "OPERATION_NOT_SUPPORTED"
IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
REQUEST_IN_PROGRESS = "REQUEST_IN_PROGRESS"
TRANSACTION_NOT_REVERSIBLE = "TRANSACTION_NOT_REVERSIBLE"
CARD_HAS_OPEN_HOLDS = "CARD_HAS_OPEN_HOLDS"
CARD_ALREADY_EXISTS = "CARD_ALREADY_EXISTS"
BALANCE_LIMIT_EXCEEDED = "BALANCE_LIMIT_EXCEEDED"
SAME_CARD = "SAME_CARD"

GRPC_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}
assert code_pb2.OK == 0  # google.rpc.Code and grpc.StatusCode share numbering
