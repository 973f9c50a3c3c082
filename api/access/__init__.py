"""Access control: API tokens (stored as hashes) and the guards that check scopes per audience."""
