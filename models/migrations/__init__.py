"""Alembic migrations of Guichet's store; run them with ``guichet db upgrade``."""
