"""boxforge: the orchestrator (MCP server, CLI, fleet service, SSH and job protocol)."""

import importlib.metadata


def package_version() -> str:
    """The installed boxforge's version (serverInfo.version, boxforge --version)."""
    try:
        return importlib.metadata.version("boxforge")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
