"""The `omnisense` command. It only wires configuration to components; the work is in the packages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from edge.settings import ConfigError, load_config
from omnisense.runtime import err_console, setup_logging, stop_on_signals

app = typer.Typer(
    help="omnisense: in-store footfall, zone presence and proximity offers from anonymized sensor events.\n\n"
    "Nodes publish events over MQTT; the store gateway stores them and serves an API. "
    "Start with `omnisense demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML configuration file.", show_default=False)]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error.")]


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


@app.command()
def node(config: ConfigOption, log_level: LogLevel = "info") -> None:
    """Run an edge node: read its sources, keep events in a durable outbox, publish them over MQTT.

    Environment overrides: OMNISENSE_NODE__SECTION__FIELD=value (e.g. OMNISENSE_NODE__MQTT__URL).
    """
    from edge.config import ENV_PREFIX, NodeConfig
    from edge.node import Node
    from edge.sources import build_sources

    setup_logging(log_level)
    try:
        settings = load_config(NodeConfig, config, ENV_PREFIX)
        sources = build_sources(settings.sources)
    except ConfigError as err:
        raise _fail(str(err)) from None

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        await Node(settings, sources).run(stop)

    asyncio.run(main())


@app.command()
def gateway(config: ConfigOption, log_level: LogLevel = "info") -> None:
    """Run the store gateway: subscribe to the store's nodes, store their events, serve the API.

    Environment overrides: OMNISENSE_GATEWAY__SECTION__FIELD=value (e.g. OMNISENSE_GATEWAY__API__PORT).
    """
    from gateway.config import ENV_PREFIX, GatewayConfig
    from gateway.service import Gateway

    setup_logging(log_level)
    try:
        settings = load_config(GatewayConfig, config, ENV_PREFIX)
    except ConfigError as err:
        raise _fail(str(err)) from None

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop)
        service = Gateway(settings)
        await service.run(stop)

    try:
        asyncio.run(main())
    except OSError as err:
        raise _fail(f"cannot start the gateway: {err}") from None


@app.command()
def demo(
    nodes: Annotated[int, typer.Option(min=1, max=200, help="Simulated nodes.")] = 3,
    duration: Annotated[float, typer.Option(min=1, help="Seconds the nodes produce events.")] = 30,
    rate: Annotated[float, typer.Option(min=0.1, help="Events per second per node.")] = 20,
    broker: Annotated[str | None, typer.Option(help="mqtt://host:port of a running broker; "
                                                    "default: an embedded broker on a free port.")] = None,
    port: Annotated[int, typer.Option(help="Gateway API port (0: a free one).")] = 0,
    data_dir: Annotated[Path, typer.Option(help="Working folder, wiped at start.")] = Path(".demo"),
    log_level: LogLevel = "warning",
) -> None:
    """The whole store on this machine: a broker, the gateway and N simulated nodes, with live progress.

    Ends with a table per node (sent, stored, duplicates, gaps, dead letters); exits non-zero if any
    event was lost.
    """
    from omnisense.demo import DemoSettings, run_demo

    setup_logging(log_level)
    ok = asyncio.run(run_demo(DemoSettings(nodes=nodes, duration_s=duration, rate_hz=rate, broker_url=broker,
                                           api_port=port, data_dir=data_dir)))
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
