"""The stores' writers and the key state: `mysql` (the one writer of a mapped model's rows,
with the key-state guard), `keystate` (KeyState: locks, sequence, tombstone, item version,
key assignment) and `sql` (the client-built multi-row statements they send)."""
