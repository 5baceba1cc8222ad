"""The local staging stack: an embedded PostgreSQL server, the demo app and its load."""
