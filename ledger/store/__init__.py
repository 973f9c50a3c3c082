"""The asyncpg event store, its msgspec mapper and its SQL migrations."""
