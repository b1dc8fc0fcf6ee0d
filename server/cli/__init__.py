"""The ``boxforge`` command line: the same Fleet as the MCP server, for people and scripts.

``parser`` (verbs and flags), ``render`` (tables, JSON, hints and errors in CLI words), ``up`` (the
parallel forge and the demo), ``commands`` (every other verb), ``main`` (the entry point).
"""

from server.cli.main import main

__all__ = ["main"]
