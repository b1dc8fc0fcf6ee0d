"""boxforge: the orchestrator (MCP server, CLI, fleet service, SSH and job protocol)."""
