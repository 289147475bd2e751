"""Plumbing shared by the gateway's SQLite and PostgreSQL stores."""
