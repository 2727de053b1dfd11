"""Aware UTC timestamps, the only clock the store uses."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
