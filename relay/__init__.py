"""The relay: every stored event, in commit order, to NATS JetStream (``ledger relay``).

Other services read the ledger through the broker, never through its tables.
The relay reads the store through ``EventStore.read_all`` alone and keeps its
own position in ``projection_positions``; see docs/relay.md.
"""
