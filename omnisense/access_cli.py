"""`omnisense access ...`: the installers' and marketers' API tokens of a store gateway.

Thin: it opens the gateway's database (named by the gateway's own config file) and calls
`gateway.roles.ApiTokens`. SQLite in WAL mode lets it run while the gateway does; the gateway reads
the tokens on every request, so a new or revoked token counts from the next request on.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from edge.settings import ConfigError, load_config
from omnisense.runtime import err_console

access_app = typer.Typer(
    help="API tokens of installers and marketers: create (shown once), list, revoke. "
         "The app and the nodes have their own credentials.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The gateway's YAML configuration file.",
                                            show_default=False)]


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _db_path(config: Path, must_exist: bool) -> Path:
    from gateway.config import ENV_PREFIX, GatewayConfig

    try:
        db_path = load_config(GatewayConfig, config, ENV_PREFIX).db_path
    except ConfigError as err:
        raise _fail(str(err)) from None
    if must_exist and not db_path.exists():
        raise _fail(f"no gateway database at {db_path}: the gateway creates it on its first start "
                    "(or `omnisense access create` does)")
    return db_path


def _when(t: float | None) -> str:
    return "" if t is None else dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


@access_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="installer or marketer.", show_default=False)],
    name: Annotated[str, typer.Option(help="Who holds the token (unique, kept for the record), e.g. alice@store.",
                                      show_default=False)],
    config: ConfigOption,
) -> None:
    """Create an API token for an installer or a marketer and print it once.

    The token goes to standard output alone (TOKEN=$(omnisense access create ...)); only its hash
    is stored, so it cannot be shown again. Send it as `Authorization: Bearer <token>`.
    """
    from gateway.roles import TOKEN_ROLES, ApiTokens, Role

    if role not in {str(r) for r in TOKEN_ROLES}:
        raise _fail(f"--role: {role!r} is not one of {', '.join(TOKEN_ROLES)} (app installs and nodes have "
                    "their own credentials)")
    tokens = ApiTokens(_db_path(config, must_exist=False))
    try:
        token = tokens.create(Role(role), name)
    except ValueError as err:
        raise _fail(str(err)) from None
    finally:
        tokens.close()
    err_console.print(f"API token for {role} [bold]{name}[/]. Store it now: it cannot be shown again "
                      f"(revoke with `omnisense access revoke {name}` and create another if it is lost).",
                      highlight=False)
    print(token)


@access_app.command("list")
def list_tokens(config: ConfigOption) -> None:
    """Every API token ever created: name, role, when created and when revoked (never the token)."""
    from gateway.roles import ApiTokens

    tokens = ApiTokens(_db_path(config, must_exist=True))
    try:
        rows = tokens.list()
    finally:
        tokens.close()
    table = Table(title="API tokens")
    for column in ("name", "role", "created", "revoked", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["role"], _when(row["created_at"]), _when(row["revoked_at"]),
                      "revoked" if row["revoked_at"] else "[green]active[/]")
    Console().print(table if rows else "no API tokens yet: create one with `omnisense access create`")


@access_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="The token's name.", show_default=False)],
           config: ConfigOption) -> None:
    """Revoke a token: refused from the next request on, also while the gateway runs."""
    from gateway.roles import ApiTokens

    tokens = ApiTokens(_db_path(config, must_exist=True))
    try:
        done = tokens.revoke(name)
        known = {row["name"] for row in tokens.list()}
    finally:
        tokens.close()
    if not done:
        raise _fail(f"token {name!r} was already revoked" if name in known else
                    f"no token named {name!r} (`omnisense access list` shows them)")
    err_console.print(f"revoked {name}", highlight=False)
