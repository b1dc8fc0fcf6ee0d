"""The MCP surface: the server and its lifespan (``app``), the thin tools (``tools``), how hints read
as tool calls (``hints``) and the streamable HTTP transport (``http``)."""
