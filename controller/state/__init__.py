"""Where the daemon keeps its state and journal: the store protocol, SQLite and PostgreSQL."""
