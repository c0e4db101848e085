"""Signed, anchored checkpoints over the append-only logs (consent ledger, certificates)."""
