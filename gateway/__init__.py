"""The provider gateway: one normalized API over every gift card provider (DESIGN.md section 4)."""
