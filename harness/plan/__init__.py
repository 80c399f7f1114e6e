"""Planning: a protocol file becomes cells and shards, and everything refusable is refused here."""
