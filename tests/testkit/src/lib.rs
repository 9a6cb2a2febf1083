//! Real MCP servers for warden tests (being written).
