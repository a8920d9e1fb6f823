"""`omnisense cloud` (the cloud ingest API) and `omnisense upload ...` (the store's uploader).

Thin, like the rest of the CLI: configuration in, component run; the work is in `cloud_sync`.
`register(app)` adds both to the `omnisense` Typer app.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from edge.settings import ConfigError, format_validation_error
from omnisense.runtime import err_console, setup_logging, stop_on_signals

LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error.")]
OptionalConfig = Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration file.",
                                                     show_default=False)]

upload_app = typer.Typer(
    help="The store's uploader: hourly aggregates (k-suppressed) and pseudonymous app visits to the cloud.",
    invoke_without_command=True, no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False)


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _uploader_settings(config: Path | None):  # noqa: ANN202 - cloud_sync is imported lazily
    from cloud_sync.uploader.config import load_uploader_settings

    if config is None:
        raise _fail("missing --config/-c: the uploader's YAML file (see config/uploader.example.yaml)")
    try:
        return load_uploader_settings(config)
    except ConfigError as err:
        raise _fail(str(err)) from None


def cloud(
    config: OptionalConfig = None,
    db_url: Annotated[str | None, typer.Option(help="sqlite:///path.db or postgresql://user@host:port/db; "
                                                    "overrides the file's db_url.")] = None,
    host: Annotated[str | None, typer.Option(help="Listen address; overrides the file's.")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port; overrides the file's.")] = None,
    log_level: LogLevel = "info",
) -> None:
    """Serve the cloud API: signed store batches in, ad exposures in (JSON or CSV), footfall out.

    Environment overrides: OMNISENSE_CLOUD__FIELD=value (e.g. OMNISENSE_CLOUD__DB_URL).
    """
    import uvicorn

    from cloud_sync.cloud.api import create_cloud_app
    from cloud_sync.cloud.config import load_cloud_settings

    setup_logging(log_level)
    try:
        settings = load_cloud_settings(config)
        overrides = {k: v for k, v in (("db_url", db_url), ("host", host), ("port", port)) if v is not None}
        if overrides:
            settings = settings.model_validate({**settings.model_dump(), **overrides})
    except ConfigError as err:
        raise _fail(str(err)) from None
    except ValidationError as exc:
        raise _fail(f"invalid option:\n{format_validation_error(exc)}") from None
    try:
        api = create_cloud_app(settings.db_url, settings.admin_token, settings.max_body_bytes,
                               pool_min_size=settings.pool_min_size, pool_max_size=settings.pool_max_size)
    except Exception as err:  # noqa: BLE001 - a database that cannot be opened is a start-up error
        raise _fail(f"cannot open the database {settings.db_url}: {err}") from None
    if settings.admin_token is None:
        err_console.print("[yellow]warning:[/] no admin_token: store registration and exposure import are open")
    uvicorn.run(api, host=settings.host, port=settings.port, log_level=log_level.lower(), access_log=False)


@upload_app.callback()
def upload(ctx: typer.Context, config: OptionalConfig = None, log_level: LogLevel = "info") -> None:
    """Run the uploader: export finished hours from the gateway database, send them in signed batches.

    Environment overrides: OMNISENSE_UPLOADER__FIELD=value (e.g. OMNISENSE_UPLOADER__CLOUD_URL).
    Sub-commands: keygen (create the store key), status (the outbox), retry-poisoned.
    """
    if ctx.invoked_subcommand is not None:
        return
    from cloud_sync.uploader.signing import KeyFileError
    from cloud_sync.uploader.uploader import Uploader

    setup_logging(log_level)
    settings = _uploader_settings(config)
    try:
        uploader = Uploader(settings)
    except (KeyFileError, OSError, ValueError) as err:
        raise _fail(str(err)) from None

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await uploader.run(stop)

    asyncio.run(main())


@upload_app.command("keygen")
def upload_keygen(
    config: OptionalConfig = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key (re-register it in the cloud).")]
    = False,
) -> None:
    """Create the store's Ed25519 key (key_file) if missing, and print its public half for the cloud."""
    from cloud_sync.uploader.signing import (
        KeyFileError,
        keygen,
        load_private_key,
        public_key_b64,
    )

    settings = _uploader_settings(config)
    try:
        if settings.key_file.exists() and not force:
            key = load_private_key(settings.key_file)
            err_console.print(f"{settings.key_file}: key exists (--force replaces it)")
        else:
            key = keygen(settings.key_file, overwrite=force)
            err_console.print(f"{settings.key_file}: new key written")
    except KeyFileError as err:
        raise _fail(str(err)) from None
    public = public_key_b64(key)
    err_console.print(f"register it: curl -X PUT {settings.cloud_url}/v1/stores/{settings.store_id} "
                      f"-H 'Content-Type: application/json' -d '{{\"public_key\": \"{public}\"}}'", highlight=False)
    print(public)


@upload_app.command("status")
def upload_status(config: OptionalConfig = None) -> None:
    """The outbox as JSON: watermark, pending items and batches, poisoned batches with their errors."""
    import json

    from cloud_sync.uploader.outbox import UploadOutbox

    settings = _uploader_settings(config)
    outbox = UploadOutbox(settings.outbox)
    try:
        print(json.dumps({**outbox.status(), "poisoned": outbox.batches("poison")}, indent=2))
    finally:
        outbox.close()


@upload_app.command("retry-poisoned")
def upload_retry_poisoned(config: OptionalConfig = None) -> None:
    """Send the batches the cloud refused again (after fixing the cause)."""
    from cloud_sync.uploader.outbox import UploadOutbox

    settings = _uploader_settings(config)
    outbox = UploadOutbox(settings.outbox)
    try:
        print(f"{outbox.retry_poisoned()} batches back in line")
    finally:
        outbox.close()


def register(app: typer.Typer) -> None:
    """Add `cloud` and `upload` to the `omnisense` command."""
    app.command("cloud")(cloud)
    app.add_typer(upload_app, name="upload")
