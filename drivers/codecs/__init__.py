"""Pure frame codecs (no I/O)."""
