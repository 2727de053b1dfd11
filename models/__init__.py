"""Domain types and the store: tables, repositories, migrations and the blob store."""
