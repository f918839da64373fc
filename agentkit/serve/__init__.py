"""`agentkit serve`: an OpenAI-compatible chat-completions server over the embedded runtime.

from agentkit.serve.app import build_app          # a Starlette app over a completion source
agentkit serve --model PATH --port 8000            # the command line
"""
