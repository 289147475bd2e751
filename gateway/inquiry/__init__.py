"""The unified inquiry: one service that asks every gateway for its operational records and joins them."""
