"""The append-only administrative audit trail: who did what, when, and with what result."""
