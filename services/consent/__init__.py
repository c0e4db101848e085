"""The consent service: state per subject and purpose, a hash-chained ledger, decisions."""
