"""Host-side tools: Python functions and MCP servers the sandboxed code (and sub-models) call.

The sandbox has no network, so tools run on the host, behind the bridge, where credentials
stay. :class:`ToolRegistry` loads and owns them; the kernel gets one stub function per tool
(same name and parameters) that posts to the bridge's ``/v1/tool`` route.
"""

from engine.tools.mcp_tools import McpServerConfig
from engine.tools.registry import FunctionTool, ToolBudget, ToolRegistry, ToolsConfig
from engine.tools.spec import RESERVED_NAMES, ToolParam, ToolSpec

__all__ = [
    "RESERVED_NAMES",
    "FunctionTool",
    "McpServerConfig",
    "ToolBudget",
    "ToolParam",
    "ToolRegistry",
    "ToolSpec",
    "ToolsConfig",
]
