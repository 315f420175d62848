"""BalanceService: card status, available balance, tender planning."""
