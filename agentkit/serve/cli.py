"""`agentkit serve`: the command line of the OpenAI-compatible server (torch loads only when it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def _default_model() -> Path | None:
    """The checkpoint the embedded backend ships with, when this installation has one."""
    try:
        from agentkit.backends import embedded
    except ImportError:
        return None
    path = getattr(embedded, "DEFAULT_CHECKPOINT", None)
    return Path(path) if path is not None and Path(path).is_dir() else None


def serve_command(
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Checkpoint folder (config.json, safetensors, tokenizer.json)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Sequences decoded together (continuous batching).")
    ] = 8,
    max_seq_len: Annotated[
        int | None, typer.Option("--max-seq-len", min=2, help="Tokens per sequence (prompt + completion).")
    ] = None,
    served_name: Annotated[
        str | None,
        typer.Option("--served-model-name", help="The model name clients send (default: folder name)."),
    ] = None,
    unconstrained: Annotated[
        bool, typer.Option("--unconstrained", help="Sample tool calls without the DSML grammar.")
    ] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads for torch.")] = 1,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            help="'scripted:FILE': replay a script of replies instead of a model (client and agent-loop "
            "testing only; no model runs).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model over the OpenAI chat-completions API (/v1/chat/completions, /v1/models)."""
    from agentkit.serve.app import serve
    from agentkit.serve.sources import ModelSource, ScriptedSource, Source

    source: Source
    if backend is not None:
        kind, _, arg = backend.partition(":")
        if kind != "scripted" or not arg:
            err_console.print(f"--backend {backend!r}: the only alternative backend is 'scripted:FILE'")
            raise typer.Exit(2)
        try:
            source = ScriptedSource(arg)
        except (ValueError, FileNotFoundError) as e:
            err_console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        err_console.print(f"[yellow]serving the scripted replies of {arg} (no model)[/]")
    else:
        folder = model or _default_model()
        if folder is None:
            err_console.print("no model: pass --model with a checkpoint folder")
            raise typer.Exit(2)
        import torch

        torch.set_num_threads(threads)
        try:
            source = ModelSource.load(
                folder,
                max_batch=max_batch,
                capacity=max_seq_len,
                model_id=served_name,
                constrained=not unconstrained,
            )
        except (ValueError, FileNotFoundError) as e:
            err_console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
    serve(source, host=host, port=port, log_level=log_level)
