"""Read models derived from the event store, each applied exactly once."""
