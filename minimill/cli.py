"""`minimill serve | models | batch | eval`: the command line, built with typer."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from minimill.config import Config, build_config
from minimill.errors import NotFound
from minimill.models.assembly import AssemblyError
from minimill.models.catalogue import BUNDLED, ModelSpec, assembled_size, resolve

if TYPE_CHECKING:
    from minimill.batch.client import BatchClient
    from minimill.evals.runner import ListPrice
    from minimill.evals.scoreboard import Scoreboard

app = typer.Typer(help="minimill: an OpenAI-compatible mini mill for tokens.", no_args_is_help=True)
console = Console()

ModelOpt = Annotated[list[str] | None, typer.Option(
    "--model", "-m", help="Catalogue id or path to a .gguf file; repeat to serve several "
                          "[the instruction ladder: qwen2.5-coder-0.5b and qwen2.5-coder-1.5b].")]


@app.command()
def serve(
    model: ModelOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to bind [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [8000].")] = None,
    kv_size: Annotated[int | None, typer.Option(help="KV cells (tokens) shared by all sequences [8192].")] = None,
    max_seqs: Annotated[int | None, typer.Option(help="Max concurrent sequences, live + retained [32].")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads [all cores].")] = None,
    step_tokens: Annotated[int | None, typer.Option(help="Token budget of one engine step [512].")] = None,
    max_queue: Annotated[int | None, typer.Option(help="Waiting requests of one tenant before 429 [256].")] = None,
    max_queue_delay: Annotated[float | None, typer.Option(
        help="Refuse (429) a request whose expected time to first token exceeds this many seconds [30].")] = None,
    kv_type: Annotated[str | None, typer.Option(
        help="KV element type: bf16, f16, q8_0, q4_0 [bf16: greedy output independent of batching].")] = None,
    retain_cells: Annotated[int | None, typer.Option(
        help="KV cells finished sequences may hold live (cells no running sequence shares); past it the least "
             "recently used move to RAM [0: steps attend only running sequences].")] = None,
    retain_ram: Annotated[bool | None, typer.Option(
        "--retain-ram/--no-retain-ram",
        help="Save finished prefixes evicted from the live KV to RAM (within --ram-tier-bytes) and load them "
             "back when a prompt resends them [on].")] = None,
    api_key: Annotated[list[str] | None, typer.Option(help="Accepted API key; repeat for several.")] = None,
    admin_key: Annotated[list[str] | None, typer.Option(
        help="API key that may also create shared prompt caches; repeat for several.")] = None,
    insecure_no_auth: Annotated[bool | None, typer.Option(
        "--insecure-no-auth", help="Allow listening beyond loopback without API keys (anyone may use it).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where minimill keeps its files [.data].")] = None,
    ledger_url: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the ledger, e.g. postgresql+psycopg://... [SQLite in the data dir].")] = None,
    ram_tier_bytes: Annotated[int | None, typer.Option(
        help="RAM for KV off the context: pinned caches and sessions first, other finished prefixes in what "
             "they leave [2 GiB].")] = None,
    disk_tier_bytes: Annotated[int | None, typer.Option(help="Disk for pinned KV [32 GiB].")] = None,
    prefix_disk_bytes: Annotated[int | None, typer.Option(
        help="Disk for finished prefixes that fall out of RAM, loaded back when a prompt resends them "
             "[0: off, they are dropped].")] = None,
    session_ttl: Annotated[float | None, typer.Option(
        "--session-ttl", help="Seconds a chat session's KV is kept by default [15].")] = None,
    max_session_ttl: Annotated[float | None, typer.Option(help="Longest session TTL a request may ask [3600].")] = None,
    batch_step_tokens: Annotated[int | None, typer.Option(
        help="Batch API tokens per engine step while online requests are about [8].")] = None,
    batch_idle_step_tokens: Annotated[int | None, typer.Option(
        help="Batch API tokens per engine step when no online request was seen for 2 s [128].")] = None,
    batch_max_seqs: Annotated[int | None, typer.Option(
        help="Batch API sequences at once [1/8 of --max-seqs]; the rest is kept for online requests.")] = None,
    speculation: Annotated[str | None, typer.Option(
        help="Speculative decoding for requests that do not choose: ngram (each sequence drafts what followed its "
             "last tokens earlier in its context), draft (the --draft-model guesses) or off; the output is the "
             "same [draft with --draft-model, else off].")] = None,
    spec_max_draft: Annotated[int | None, typer.Option(
        help="Most draft tokens a sequence verifies in one step (prompt lookup, draft model, Predicted Outputs) "
             "[8].")] = None,
    draft_model: Annotated[str | None, typer.Option(
        help="A smaller model with the same vocabulary (catalogue id or .gguf path) that drafts tokens for the "
             "served models sharing it; refused if it shares none.")] = None,
    upstream: Annotated[list[str] | None, typer.Option(
        help="Serve a remote OpenAI-compatible model: NAME=URL[,model=ID][,key-env=VAR][,timeout=S][,input=P]"
             "[,cached-input=P][,output=P] (USD per 1M tokens); repeat for several.")] = None,
    default_model: Annotated[str | None, typer.Option(
        help="What model=\"default\" means [the scoreboard's choice, see --default-quality-ratio].")] = None,
    default_quality_ratio: Annotated[float | None, typer.Option(
        help="The default is the cheapest served model whose mean eval quality is at least this times the "
             "best served model's [0.9].")] = None,
    min_confidence: Annotated[float | None, typer.Option(
        help="model=\"auto\": escalate when an answer's mean token log-probability is below this [-1.0].")] = None,
    replicas: Annotated[int | None, typer.Option(
        help="Engine replicas on Ray Serve behind one endpoint, routed by session, cache and prefix (pip install "
             "minimill[ray]) [1: one process, no Ray].")] = None,
    max_replicas: Annotated[int | None, typer.Option(
        help="Let Ray Serve add replicas up to this many when requests in flight grow [off].")] = None,
    upscale_delay: Annotated[float | None, typer.Option(
        help="Autoscaling: seconds requests in flight must stay above --max-seqs per replica before one is "
             "added [30].")] = None,
    downscale_delay: Annotated[float | None, typer.Option(
        help="Autoscaling: seconds they must stay below before one is removed [600].")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Join this Ray cluster (e.g. ray://head:10001 or auto) [a local Ray instance on 127.0.0.1].")] = None,
    replica_cpus: Annotated[float | None, typer.Option(
        help="CPUs declared per replica (and its engine's threads unless --threads) [1].")] = None,
    replica_gpus: Annotated[float | None, typer.Option(help="GPUs declared per replica [0].")] = None,
    replica_router: Annotated[str | None, typer.Option(
        help="How requests are spread over replicas: affinity (session, cache, prefix, then load), round_robin, "
             "or ray_prefix (Ray Serve LLM's prefix router on the prompt text) [affinity].")] = None,
    log_level: Annotated[str, typer.Option(help="Python log level.")] = "info",
) -> None:
    """Load the model(s) and serve the OpenAI-compatible API."""
    import uvicorn

    from minimill.api.app import create_app
    from minimill.router.upstream import display_url
    from minimill.runtime import Runtime

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(models=model, host=host, port=port, kv_size=kv_size, max_seqs=max_seqs,
                              threads=threads, step_tokens=step_tokens, max_queue=max_queue,
                              max_queue_delay=max_queue_delay, kv_type=kv_type, retain_cells=retain_cells,
                              retain_ram=retain_ram,
                              api_keys=api_key, admin_keys=admin_key, insecure_no_auth=insecure_no_auth,
                              data_dir=data_dir, ledger_url=ledger_url, ram_tier_bytes=ram_tier_bytes,
                              disk_tier_bytes=disk_tier_bytes, prefix_disk_bytes=prefix_disk_bytes,
                              default_session_ttl=session_ttl,
                              max_session_ttl=max_session_ttl, batch_step_tokens=batch_step_tokens,
                              batch_idle_step_tokens=batch_idle_step_tokens, batch_max_seqs=batch_max_seqs,
                              speculation=speculation, spec_max_draft=spec_max_draft, draft_model=draft_model,
                              upstreams=upstream,
                              default_model=default_model,
                              default_quality_ratio=default_quality_ratio,
                              min_confidence=min_confidence, replicas=replicas, max_replicas=max_replicas,
                              upscale_delay=upscale_delay, downscale_delay=downscale_delay,
                              ray_address=ray_address, replica_cpus=replica_cpus, replica_gpus=replica_gpus,
                              replica_router=replica_router)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    _self_test(config)
    _calibrate(config, force=False)
    if config.scale.on_ray:
        _serve_replicas(config)
        return
    try:
        runtime = Runtime.build(config)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    for engine in runtime.engines.values():
        stats = engine.stats()
        console.print(f"model [bold]{engine.name}[/bold] ({engine.model.path}); KV capacity "
                      f"{stats.kv_total} tokens ({config.engine.kv_type}), {config.engine.max_seqs} sequences, "
                      f"{engine.n_ctx} tokens per request")
    server = config.server
    for name, up in runtime.upstreams.items():
        console.print(f"model [bold]{name}[/bold]: upstream {up.spec.model} at {display_url(up.spec.base_url)}")
    default = runtime.router.default()
    console.print(f"minimill listening on http://{server.host}:{server.port}/v1 "
                  f"(default model: {default.model}: {default.reason})")
    try:
        uvicorn.run(create_app(runtime), host=server.host, port=server.port, log_level=log_level.lower())
    finally:
        runtime.close()


def _serve_replicas(config: Config) -> None:
    """`serve --replicas N`: the same API from N replicas on Ray Serve, until interrupted."""
    try:
        from minimill.scale import deployments
    except ImportError as exc:
        console.print(f"[bold red]--replicas needs Ray Serve:[/bold red] pip install 'minimill[ray]' ({exc})")
        raise typer.Exit(2) from exc
    scale = config.scale
    where = scale.ray_address or "a local Ray instance on 127.0.0.1"
    console.print(f"starting {scale.replicas} replica(s) of {', '.join(config.models)} on {where}; "
                  f"minimill listening on http://{config.server.host}:{config.server.port}/v1")
    deployments.run_until_stopped(config)


@app.command("replicas")
def replicas_command(
    count: Annotated[int, typer.Argument(min=1, help="How many replicas to run from now on.")],
    ray_address: Annotated[str | None, typer.Option(
        help="The Ray cluster `serve --replicas` runs on [the local instance it started on this host].")] = None,
) -> None:
    """Add or remove replicas of a running `minimill serve --replicas N` (started without --max-replicas)."""
    try:
        from minimill.scale import deployments
    except ImportError as exc:
        console.print(f"[bold red]replicas needs Ray Serve:[/bold red] pip install 'minimill[ray]' ({exc})")
        raise typer.Exit(2) from exc
    try:
        deployments.scale_to(count, ray_address)
    except Exception as exc:  # no cluster, no application, or an autoscaled one: say which, not a trace
        console.print(f"[bold red]could not set the replicas:[/bold red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"minimill now runs {count} replica(s); new ones answer once their models are loaded")


def _self_test(config: Config) -> None:
    """One token from each local model in a child process before listening; exit 3 naming the cause if not."""
    from minimill.engine import selftest

    for name in config.models:
        spec = _model_spec(name, config.data_dir)
        outcome = selftest.run(spec.path)
        if not outcome.ok:
            console.print(f"[bold red]minimill cannot serve {spec.id}:[/bold red] {outcome.message}")
            raise typer.Exit(3)


def _calibrate(config: Config, *, force: bool) -> None:
    """Measure each local model's throughput on this host (in a child process) and store it: prices are
    computed from it. Without `force`, only a file that has no measurement (its own or published)."""
    import datetime
    import os
    import platform

    from minimill.billing.throughput import Throughput, ThroughputStore, measured
    from minimill.engine import calibrate
    from minimill.models.fingerprint import file_digest

    store = ThroughputStore(config.data_dir / "throughput.json")
    threads = config.engine.threads or os.cpu_count() or 1
    for name in config.models:
        spec = _model_spec(name, config.data_dir)
        digest = file_digest(spec.path, config.data_dir / "fingerprints")
        if not force and measured(digest, store) is not None:
            continue
        with console.status(f"calibrating {spec.id} on {threads} threads (prefill and decode tokens/s)"):
            try:
                found = calibrate.run(spec.path, threads)
            except calibrate.CalibrationFailed as exc:
                console.print(f"[bold red]cannot calibrate {spec.id}:[/bold red] {exc}")
                raise typer.Exit(3) from exc
        store.put(digest, Throughput(model=spec.id, prefill_tokens_per_second=found.prefill_tokens_per_second,
                                     decode_tokens_per_second=found.decode_tokens_per_second,
                                     kv_bytes_per_token=found.kv_bytes_per_token, threads=found.threads,
                                     measured_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                                     host=f"{platform.node()} ({os.cpu_count()} CPUs)"))
        console.print(f"{spec.id}: prefill {found.prefill_tokens_per_second:.0f} tok/s, decode "
                      f"{found.decode_tokens_per_second:.1f} tok/s ({found.streams} streams), stored in {store.path}")


@app.command("calibrate")
def calibrate_command(
    model: ModelOpt = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads, as `serve` will use [all cores].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where minimill keeps its files [.data].")] = None,
) -> None:
    """Measure each model's prefill and decode throughput on this host (run it while the machine is idle);
    `serve` prices every local model from these figures."""
    _calibrate(build_config(models=model, threads=threads, data_dir=data_dir), force=True)


def _model_spec(name: str, data_dir: Path) -> ModelSpec:
    """`resolve`, with a progress bar while a parted model is assembled; a refusal exits with its message."""
    total = assembled_size(name)
    with Progress(TextColumn("assembling {task.description}"), BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), console=console, transient=True, disable=total is None) as bar:
        task = None

        def advance(written: int) -> None:
            nonlocal task
            if task is None:  # only a model that is really being assembled shows a bar
                task = bar.add_task(name, total=total)
            bar.advance(task, written)

        try:
            return resolve(name, data_dir, progress=advance)
        except NotFound as exc:
            raise typer.BadParameter(exc.message) from exc
        except AssemblyError as exc:
            console.print(f"[bold red]cannot assemble {name}:[/bold red] {exc}")
            raise typer.Exit(2) from exc


@app.command()
def models(
    paths: Annotated[list[str] | None, typer.Argument(help="Local .gguf files to list too.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Where assembled model files live.")] = Path(".data"),
) -> None:
    """List the catalogue (bundled models, assembled into the data dir first if need be, and any local GGUF
    files given) with size, context, parameters, license, and which one `default` means."""
    from minimill.engine.llama import LlamaModel
    from minimill.router.policy import shipped_default

    default = shipped_default(data_dir, Config().models)
    table = Table("id", "size", "context", "parameters", "license", "default", "source")
    for name in [*BUNDLED, *(paths or [])]:
        spec = _model_spec(name, data_dir)
        model = LlamaModel(spec.path, vocab_only=True)
        table.add_row(spec.id, f"{spec.size_bytes / 2**20:.0f} MiB", str(model.n_ctx_train), spec.parameters,
                      spec.license, "yes" if spec.id == default.model else "", spec.description)
        model.close()
    console.print(table)
    console.print(f"default (when serving {', '.join(Config().models)}): {default.model}: {default.reason}")


batch_app = typer.Typer(help="Batch API: submit a JSONL file of requests, follow it, cancel it.",
                        no_args_is_help=True)
app.add_typer(batch_app, name="batch")
BaseUrlOpt = Annotated[str, typer.Option(envvar="MINIMILL_BASE_URL", help="The server's API root.")]
BASE_URL = "http://127.0.0.1:8000/v1"
KeyOpt = Annotated[str | None, typer.Option(envvar="MINIMILL_API_KEY", help="API key, if the server wants one.")]


@contextmanager
def _batch_client(base_url: str, api_key: str | None) -> Iterator[BatchClient]:
    """A client of the server's Batch API; a refusal is printed and exits with status 2."""
    from minimill.batch.client import BatchClient, BatchClientError

    client = BatchClient(base_url, api_key)
    try:
        yield client
    except BatchClientError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        client.close()


def _show(batch: dict[str, object]) -> None:
    table = Table("batch", "status", "total", "completed", "failed", "cost (USD)", "output file", "error file")
    counts: dict[str, int] = batch["request_counts"]  # type: ignore[assignment]
    cost: dict[str, float] = batch.get("cost") or {}  # type: ignore[assignment]
    table.add_row(str(batch["id"]), str(batch["status"]), str(counts["total"]), str(counts["completed"]),
                  str(counts["failed"]), f"{cost.get('total', 0.0):.9f}", str(batch.get("output_file_id")),
                  str(batch.get("error_file_id")))
    console.print(table)
    errors: dict[str, list[dict[str, object]]] | None = batch.get("errors")  # type: ignore[assignment]
    for error in (errors or {}).get("data", []):
        console.print(f"[red]{error.get('code')}[/red]: {error.get('message')}")


@batch_app.command("submit")
def batch_submit(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL: one request per line.")],
    base_url: BaseUrlOpt = BASE_URL,
    api_key: KeyOpt = None,
    endpoint: Annotated[str | None, typer.Option(help="/v1/chat/completions or /v1/completions [first line's url].")]
    = None,
    window: Annotated[str, typer.Option(help="completion_window.")] = "24h",
    output: Annotated[Path | None, typer.Option(help="Where to write the answers [FILE.output.jsonl].")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the batch to its end and download its files.")] = True,
) -> None:
    """Upload FILE, start a batch on it, show progress until it ends, and write its output file."""
    with _batch_client(base_url, api_key) as client:
        batch = client.submit(path, endpoint, window)
        console.print(f"batch [bold]{batch['id']}[/bold] created ({batch['status']})")
        if not wait:
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            task = progress.add_task("validating", total=None)

            def update(state: dict[str, object]) -> None:
                counts: dict[str, int] = state["request_counts"]  # type: ignore[assignment]
                progress.update(task, description=str(state["status"]), total=counts["total"] or None,
                                completed=counts["completed"] + counts["failed"])

            batch = client.wait(batch["id"], update)
        _show(batch)
        target = output or path.with_name(path.stem + ".output.jsonl")
        if batch.get("output_file_id"):
            console.print(f"answers: {client.download(batch['output_file_id'], target)}")
        if batch.get("error_file_id"):
            errors = target.with_name(target.name.replace(".output", "").removesuffix(".jsonl") + ".errors.jsonl")
            console.print(f"errors: {client.download(batch['error_file_id'], errors)}")
    if batch["status"] != "completed":
        raise typer.Exit(1)


@batch_app.command("status")
def batch_status(batch_id: str, base_url: BaseUrlOpt = BASE_URL, api_key: KeyOpt = None) -> None:
    """Show a batch: status, counts, cost, files."""
    with _batch_client(base_url, api_key) as client:
        _show(client.get(batch_id))


@batch_app.command("cancel")
def batch_cancel(batch_id: str, base_url: BaseUrlOpt = BASE_URL, api_key: KeyOpt = None) -> None:
    """Cancel a batch: finished lines are kept, the rest go to its error file."""
    with _batch_client(base_url, api_key) as client:
        _show(client.cancel(batch_id))


eval_app = typer.Typer(help="Capability evals: run suites against an endpoint, print the scoreboard.")
app.add_typer(eval_app, name="eval")
DataDirOpt = Annotated[Path, typer.Option(envvar="MINIMILL_DATA_DIR", help="Where results are kept (the "
                                          "server's data dir, so it can read the scoreboard) [.data].")]


@eval_app.callback(invoke_without_command=True)
def eval_run(
    context: typer.Context,
    models: Annotated[list[str] | None, typer.Option("--models", "-m", help="Models to evaluate (\"auto\" too); "
                                                     "repeat [every model the endpoint lists].")] = None,
    suites: Annotated[list[str] | None, typer.Option("--suites", "-s", help="Suites to run; repeat [all].")] = None,
    items: Annotated[int, typer.Option("--items", "-n", min=1, help="Items per suite.")] = 50,
    seed: Annotated[int, typer.Option(help="Item split: 1 = the published scoreboard (the router is tuned on "
                                      "it), 2 = held out.")] = 1,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    price: Annotated[list[str] | None, typer.Option(help="MODEL=INPUT,CACHED_INPUT,OUTPUT (USD per 1M tokens) for "
                                                    "an endpoint whose answers carry no usage.cost [its "
                                                    "/v1/prices, if it has one]; repeat.")] = None,
    base_url: BaseUrlOpt = BASE_URL,
    api_key: KeyOpt = None,
    data_dir: DataDirOpt = Path(".data"),
) -> None:
    """Run the suites against every model (resumable: recorded items are skipped), then print the table."""
    import asyncio

    import httpx

    from minimill.evals import runner
    from minimill.evals.results import ItemResult, ResultStore
    from minimill.evals.scoreboard import Scoreboard
    from minimill.evals.suites import ALL, by_name

    if context.invoked_subcommand is not None:
        return
    try:
        chosen = [by_name(name) for name in suites] if suites else list(ALL)
    except KeyError as exc:
        raise typer.BadParameter(str(exc), param_hint="--suites") from exc
    endpoint = runner.Endpoint(base_url, api_key)
    if not models:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            response = httpx.get(f"{base_url.rstrip('/')}/models", headers=headers, timeout=30)
            response.raise_for_status()
            listed = response.json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            console.print(f"[red]cannot list the models of {base_url}: {exc}[/red]")
            raise typer.Exit(2) from exc
        models = [m["id"] for m in listed if m["id"] not in ("default", "auto")]
    store = ResultStore(data_dir / "evals" / "results")
    prices = _list_prices(base_url, api_key, price or [])
    total = len(models) * len(chosen) * items
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(f"{len(models)} models x {len(chosen)} suites", total=total)

        def advance(result: ItemResult | None) -> None:
            progress.advance(task)

        summary = asyncio.run(runner.run(endpoint, models, chosen, store, seed=seed, n=items,
                                         concurrency=concurrency, prices=prices, on_result=advance))
    console.print(f"answered {summary.answered}, already recorded {summary.skipped}, failed {summary.failed}")
    for failure in summary.failures[:10]:
        console.print(f"[red]{failure}[/red]")
    names = {s.name for s in chosen}
    _scoreboard_table(Scoreboard.build(r for r in store.all(seed=seed) if r.suite in names and r.model in models))
    if summary.failed:
        raise typer.Exit(1)


def _list_prices(base_url: str, api_key: str | None, given: list[str]) -> dict[str, ListPrice]:
    """Prices for costing answers without `usage.cost`: the endpoint's /v1/prices when it has one (a
    minimill), overridden by --price."""
    import httpx

    from minimill.evals.runner import ListPrice

    prices: dict[str, ListPrice] = {}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        book = httpx.get(f"{base_url.rstrip('/')}/prices", headers=headers, timeout=10).json()["data"]
        prices = {m: ListPrice(p["input"], p["cached_input"], p["output"]) for m, p in book.items()}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        pass  # not a minimill: costs come from --price or are 0
    for text in given:
        model, _, numbers = text.partition("=")
        try:
            prices[model] = ListPrice(*(float(x) for x in numbers.split(",")))
        except (TypeError, ValueError) as exc:
            raise typer.BadParameter(f"{text!r}: expected MODEL=INPUT,CACHED_INPUT,OUTPUT", param_hint="--price") \
                from exc
    return prices


def _scoreboard_table(board: Scoreboard) -> None:
    """Print a scoreboard: quality, cost and latency per model, accuracy ± half its interval per suite."""
    names = sorted({name for m in board.models.values() for name in m.suites})
    table = Table("model", "quality", "$/1k items", "s/item", *names)
    for score in sorted(board.models.values(), key=lambda m: -m.quality):
        table.add_row(score.model, f"{score.quality:.3f}", f"{score.cost_per_item * 1000:.4f}",
                      f"{score.latency_s:.2f}",
                      *(f"{s.accuracy:.2f} ±{(s.ci_high - s.ci_low) / 2:.2f}" if (s := score.suites.get(n)) else "–"
                        for n in names))
    console.print(table)


@eval_app.command("report")
def eval_report(
    data_dir: DataDirOpt = Path(".data"),
    out: Annotated[Path | None, typer.Option(help="Folder for scoreboard.md and scoreboard.png "
                                             "[DATA_DIR/evals].")] = None,
    seed: Annotated[int, typer.Option(help="Item split to report.")] = 1,
    ratio: Annotated[float, typer.Option(
        "--default-quality-ratio",
        help="The default: the cheapest model within this ratio of the best quality.")] = 0.9,
) -> None:
    """Print the scoreboard; write it as a Markdown table and a price-vs-quality plot (PNG)."""
    from minimill.evals import report
    from minimill.evals.results import ResultStore
    from minimill.evals.scoreboard import Scoreboard

    store = ResultStore(data_dir / "evals" / "results")
    board = Scoreboard.build(store.all(seed=seed))
    if not board.models:
        console.print(f"[red]no eval results under {store.root}: run `minimill eval` first[/red]")
        raise typer.Exit(2)
    default = board.choose_default(sorted(board.models), ratio=ratio)
    target = out or data_dir / "evals"
    target.mkdir(parents=True, exist_ok=True)
    (target / "scoreboard.md").write_text(report.markdown(board, default.model), encoding="utf-8")
    report.plot(board, target / "scoreboard.png", default.model)
    _scoreboard_table(board)
    console.print(f"default: [bold]{default.model}[/bold] ({default.reason})")
    console.print(f"wrote {target / 'scoreboard.md'} and {target / 'scoreboard.png'}")


if __name__ == "__main__":
    app()
