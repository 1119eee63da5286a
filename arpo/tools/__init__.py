"""Tools the agent calls: the tag parser, a sandboxed Python interpreter and search (SQLite FTS5 / HTTP)."""
