"""`omnisense broker ...`: the store's secured Mosquitto configuration.

Thin: the files are written by `gateway.broker_setup.generate`; this prints what it did.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gateway.broker import find_mosquitto
from gateway.broker_setup import BrokerSetupError, gateway_mqtt_settings, generate
from omnisense.runtime import err_console

broker_app = typer.Typer(
    help="The store's MQTT broker: generate its secured Mosquitto configuration (TLS, a password per node, ACLs).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@broker_app.callback()
def broker() -> None:
    """The store's MQTT broker: generate its secured Mosquitto configuration (TLS, a password per node, ACLs)."""


_ROLES = {
    "mosquitto.conf": "Mosquitto configuration (rewritten each run)",
    "passwd": "password hashes: the gateway and every claimed node (kept)",
    "acl": "who may publish and subscribe to what (rewritten each run)",
    "ca.pem": "the store's CA certificate: what nodes trust (kept)",
    "ca.key": "the store's CA key: back it up, keep it secret (kept)",
    "server.pem": "the broker's and gateway API's TLS certificate (renewed when names change or it nears its end)",
    "server.key": "its private key (kept)",
    "gateway.password": "the gateway's MQTT password (kept)",
    "data": "persistence folder: sessions and queued messages",
    "broker.json": "these settings, read by the gateway",
}


@broker_app.command("config")
def config(
    store_id: Annotated[str, typer.Option("--store-id", help="The store's id, as in the gateway's configuration.",
                                          show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder to write; re-running keeps its CA, keys and passwords.",
                                      show_default=False)],
    port: Annotated[int, typer.Option(help="TLS port of the broker.")] = 8883,
    bind: Annotated[str, typer.Option(help="Address the broker listens on.")] = "0.0.0.0",
    hostname: Annotated[list[str] | None, typer.Option(
        "--hostname", help="DNS name nodes use to reach the gateway (repeat for several). Default: localhost.",
        show_default=False)] = None,
    ip: Annotated[list[str] | None, typer.Option(
        "--ip", help="IP address nodes use to reach the gateway (repeat for several). Default: 127.0.0.1.",
        show_default=False)] = None,
    user: Annotated[str | None, typer.Option(
        help="User Mosquitto switches to when started as root (default: mosquitto); run the gateway as it too, "
             "so it can update the password file and signal the broker.", show_default=False)] = None,
) -> None:
    """Write the store's secured Mosquitto configuration: TLS with the store's own CA, one password per node, ACLs.

    Prints the files written, the command to run Mosquitto with them, the CA fingerprint installers compare,
    and the gateway's `mqtt:` settings. Safe to re-run: it keeps the CA, keys and passwords.
    """
    hostnames = hostname if hostname else ["localhost"]
    ips = ip if ip else ["127.0.0.1"]
    try:
        files = generate(out, store_id, port=port, bind=bind, hostnames=hostnames, ips=ips, user=user)
        # The gateway usually runs beside the broker: loopback when the certificate names it.
        gateway_host = next((h for h in ("127.0.0.1", "localhost") if h in [*ips, *hostnames]), hostnames[0])
        mqtt = gateway_mqtt_settings(files, host=gateway_host)
        fingerprint = files.fingerprint
    except BrokerSetupError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
        raise typer.Exit(2) from None

    console = Console()
    table = Table(title=f"Broker of store {store_id} in {files.directory}")
    table.add_column("file")
    table.add_column("what it is")
    for path in files.written():
        table.add_row(path.name + ("/" if path.is_dir() else ""), _ROLES.get(path.name, ""))
    console.print(table)
    binary = find_mosquitto() or "mosquitto"
    console.print(f"Listens on {escape(files.bind)}:{files.port} (TLS); certificate names: "
                  f"{escape(', '.join([*files.hostnames, *files.ips]))}", highlight=False)
    console.print(f"Run it:  [bold]{escape(shlex.join([binary, '-c', str(files.conf)]))}[/]", highlight=False)
    console.print(f"CA fingerprint (SHA-256): [bold]{fingerprint}[/]", highlight=False)
    console.print("The gateway's configuration, `mqtt:` section:", highlight=False)
    console.print(escape(yaml.safe_dump({"mqtt": mqtt}, sort_keys=False)), highlight=False)
