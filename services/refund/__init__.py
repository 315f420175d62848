"""RefundService: reload, cash-out, refund onto a new or existing card (Refund: not yet)."""
