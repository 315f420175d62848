"""FulfillmentService: physical activation, e-gift issuance, claim links, exchange, order events."""
