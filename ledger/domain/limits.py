"""Bounds of what an account holds, in a module of their own: the settings and the CLI check
them before loading the domain."""

MAX_MONTHLY_ALLOWANCE = 1_000_000_000
"""The views hold credits as PostgreSQL bigints: every bucket is bounded where it is filled."""
