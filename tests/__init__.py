"""Guichet's test suite; its packages mirror the project's."""
