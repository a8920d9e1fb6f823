"""The `omnisense` command. It only wires configuration to components; the work is in the packages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from edge.settings import ConfigError, load_config
from omnisense.access_cli import access_app
from omnisense.broker_cli import broker_app
from omnisense.cloud_cli import register as register_cloud
from omnisense.install_cli import doctor, install_app
from omnisense.lift_cli import lift_app
from omnisense.lift_people_cli import register as register_people_lift
from omnisense.lift_report_cli import register as register_lift_report
from omnisense.provision_cli import provision_app
from omnisense.radio_cli import radio_app
from omnisense.runtime import err_console, setup_logging, stop_on_signals
from omnisense.vision_cli import vision_app

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

    from gateway.broker_setup import BrokerSetupError

    try:
        asyncio.run(main())
    except (OSError, BrokerSetupError) as err:
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


sim_app = typer.Typer(
    help="Simulate a whole store (or many) with ground truth, and evaluate the gateway against it.",
    invoke_without_command=True, no_args_is_help=False)
app.add_typer(sim_app, name="sim")
app.add_typer(radio_app, name="radio")
app.add_typer(provision_app, name="provision")
app.add_typer(install_app, name="install")
app.command("doctor")(doctor)
app.add_typer(broker_app, name="broker")
register_people_lift(lift_app)
register_lift_report(lift_app)
app.add_typer(lift_app, name="lift")
app.add_typer(vision_app, name="vision")
app.add_typer(access_app, name="access")
register_cloud(app)
DEFAULT_PLAN = Path(__file__).resolve().parents[1] / "config" / "store.example.yaml"


def _load_plan(path: Path):  # noqa: ANN202 - firmware_sim is imported lazily
    from firmware_sim.plan import load_plan

    try:
        return load_plan(path)
    except ConfigError as err:
        raise _fail(str(err)) from None


@sim_app.callback()
def sim(
    ctx: typer.Context,
    store: Annotated[Path, typer.Option(help="Store plan YAML.")] = DEFAULT_PLAN,
    nodes: Annotated[int, typer.Option(min=1, max=100_000, help="Simulated nodes; beyond the plan's, whole "
                                                               "stores are replicated.")] = 10,
    speed: Annotated[float, typer.Option(min=0, help="Simulated seconds per wall second; 0: as fast as possible.")] = 60,
    duration: Annotated[float, typer.Option(min=10, help="Simulated seconds.")] = 3600,
    start: Annotated[str | None, typer.Option(help="Simulated start, ISO 8601 with offset; "
                                                   "default: today's opening hour.")] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same shoppers and events.")] = 1,
    broker: Annotated[str | None, typer.Option(help="mqtt://host:port; default: a private Mosquitto "
                                                    "(or amqtt when Mosquitto is not installed).")] = None,
    gateway: Annotated[bool, typer.Option(help="Run the first store's gateway and evaluate it.")] = True,
    out: Annotated[Path, typer.Option(help="Working folder (ground truth, gateway database); wiped at start.")]
    = Path(".sim"),
    log_level: LogLevel = "warning",
) -> None:
    """Event-level simulation: N nodes publish the events the edge would produce, faster than real time.

    Writes the first store's ground truth to OUT/truth.jsonl, runs its gateway into OUT/gateway.db,
    and ends with the evaluation table (`omnisense sim eval` prints it again).
    """
    if ctx.invoked_subcommand is not None:
        return
    import datetime as dt

    from rich.console import Console

    from firmware_sim.plan import default_start
    from omnisense.sim import SimSettings, run_sim

    setup_logging(log_level)
    plan = _load_plan(store)
    if start is None:
        begin = default_start(plan)
    else:
        try:
            when = dt.datetime.fromisoformat(start)
        except ValueError:
            raise _fail(f"--start: not an ISO 8601 date-time: {start!r}") from None
        if when.tzinfo is None:
            raise _fail(f"--start: give a UTC offset, e.g. {start}+01:00") from None
        begin = when.timestamp()
    settings = SimSettings(plan=plan, nodes=nodes, speed=speed, duration_s=duration, start=begin, seed=seed,
                           broker_url=broker, gateway=gateway, out_dir=out)
    ok = asyncio.run(run_sim(settings, Console()))
    raise typer.Exit(0 if ok else 1)


@sim_app.command("eval")
def sim_eval(
    truth: Annotated[Path, typer.Option(help="Ground-truth log written by `omnisense sim`.")] = Path(".sim/truth.jsonl"),
    db: Annotated[Path, typer.Option(help="The gateway's SQLite database.")] = Path(".sim/gateway.db"),
    store: Annotated[Path, typer.Option(help="Store plan YAML the run used.")] = DEFAULT_PLAN,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
) -> None:
    """Compare what the gateway stored with the ground truth: counts in/out, occupancy, visits, dwell, zones."""
    from rich.console import Console

    from firmware_sim.evaluate import as_json, evaluate, load_events
    from firmware_sim.truth import Truth
    from omnisense.sim import metrics_table

    plan = _load_plan(store)
    try:
        metrics = evaluate(load_events(db), Truth.load(truth), plan.counting_node().node_id)
    except (OSError, ValueError) as err:
        raise _fail(str(err)) from None
    if json_output:
        print(as_json(metrics))
    else:
        Console().print(metrics_table(metrics, f"{db}: gateway vs ground truth"))


if __name__ == "__main__":
    app()
