"""The stores' writers and the key state; nothing here imports the parts above it (an
import contract checks it).

- `mysql`: the one writer of a mapped model's rows, "this key is now this row" / "this key
  is gone", behind the key-state guard (by stream sequence, item version, or current);
- `dynamo`: the one writer and reader of a mapped table's items (conditional on the item
  version; batch put for backfill);
- `keystate`: KeyState, per key: locks, sequence, tombstone, item version, key assignment;
- `marks`: the connection mark that keeps the capture triggers from echoing the sync's own
  writes;
- `sql`: the client-built multi-row statements the MySQL writer sends.
"""
