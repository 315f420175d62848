"""Settlement: captures per shipment against holds, advanced holds, batch settlement, scheduled
reversals, hold expiry and the outcome resolver (services/settlement/README.md)."""
