"""`minimill serve | models`: the command line, built with typer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from minimill.config import build_config
from minimill.models.catalogue import BUNDLED, DEFAULT_MODEL, resolve

app = typer.Typer(help="minimill: an OpenAI-compatible mini mill for tokens.", no_args_is_help=True)
console = Console()

ModelOpt = Annotated[list[str] | None, typer.Option(
    "--model", "-m", help="Catalogue id or path to a .gguf file; repeat to serve several (first = default).")]


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
    kv_size: Annotated[int | None, typer.Option(help="KV cells (tokens) shared by all sequences [8192].")] = None,
    max_seqs: Annotated[int | None, typer.Option(help="Max concurrent sequences, live + retained [32].")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads [all cores].")] = None,
    step_tokens: Annotated[int | None, typer.Option(help="Token budget of one engine step [512].")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Waiting requests before 429 [256].")] = None,
    kv_type: Annotated[str | None, typer.Option(
        help="KV element type: bf16, f16, q8_0, q4_0 [bf16: greedy output independent of batching].")] = None,
    retain_cells: Annotated[int | None, typer.Option(
        help="Used KV cells up to which finished sequences are kept as reusable prefixes [4096].")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Accepted API key; repeat for several.")] = None,
    admin_key: Annotated[list[str] | None, typer.Option(
        help="API key that may also create shared prompt caches; repeat for several.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where minimill keeps its files [.data].")] = None,
    ledger_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the ledger, e.g. postgresql+psycopg://... [SQLite in the data dir].")] = None,
    ram_tier_bytes: Annotated[int | None, typer.Option(help="RAM for pinned KV off the context [2 GiB].")] = None,
    disk_tier_bytes: Annotated[int | None, typer.Option(help="Disk for pinned KV [32 GiB].")] = None,
    session_ttl: Annotated[float | None, typer.Option(
        "--session-ttl", help="Seconds a chat session's KV is kept by default [15].")] = None,
    max_session_ttl: Annotated[float | None, typer.Option(help="Longest session TTL a request may ask [3600].")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "info",
) -> None:
    """Load the model(s) and serve the OpenAI-compatible API."""
    import uvicorn

    from minimill.api.app import create_app
    from minimill.runtime import Runtime

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(models=model, host=host, port=port, kv_size=kv_size, max_seqs=max_seqs,
                              threads=threads, step_tokens=step_tokens, max_queue=max_queue,
                              kv_type=kv_type, retain_cells=retain_cells,
                              api_keys=[*(api_key or []), *(admin_key or [])] or None, admin_keys=admin_key,
                              data_dir=data_dir, ledger_url=ledger_url, ram_tier_bytes=ram_tier_bytes,
                              disk_tier_bytes=disk_tier_bytes, default_session_ttl=session_ttl,
                              max_session_ttl=max_session_ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    runtime = Runtime.build(config)
    for engine in runtime.engines.values():
        stats = engine.stats()
        console.print(f"model [bold]{engine.name}[/bold] ({engine.model.path}); KV capacity "
                      f"{stats.kv_total} tokens ({config.engine.kv_type}), {config.engine.max_seqs} sequences, "
                      f"{engine.n_ctx} tokens per request")
    server = config.server
    console.print(f"minimill listening on http://{server.host}:{server.port}/v1 "
                  f"(default model: {runtime.default_model})")
    try:
        uvicorn.run(create_app(runtime), host=server.host, port=server.port, log_level=log_level.lower())
    finally:
        runtime.close()


@app.command()
def models(
    paths: Annotated[list[str] | None, typer.Argument(help="Local .gguf files to list too.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Where assembled model files live.")] = Path(".data"),
) -> None:
    """List the catalogue: bundled models and any local GGUF files given."""
    from minimill.engine.llama import LlamaModel

    table = Table("id", "size", "context", "default", "source")
    for name in [*BUNDLED, *(paths or [])]:
        spec = resolve(name, data_dir)
        model = LlamaModel(spec.path, n_gpu_layers=0)
        table.add_row(spec.id, f"{spec.size_bytes / 2**20:.0f} MiB", str(model.n_ctx_train),
                      "yes" if spec.id == DEFAULT_MODEL else "", spec.description)
        model.close()
    console.print(table)


if __name__ == "__main__":
    app()
