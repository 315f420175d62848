"""AuthorizationService: holds, redemptions, voids, reversals and multi-tender checkout."""
