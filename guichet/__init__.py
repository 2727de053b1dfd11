"""Guichet's composition root: settings, CLI, the aiohttp application and the service supervisor."""
