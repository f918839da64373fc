"""agentkit: tool-using agents with an embedded DeepSeek-V4 model."""

__version__ = "0.1.0"
