"""Process plumbing shared by the commands: logging, signals, turning config errors into exits."""

from __future__ import annotations

import asyncio
import logging
import signal

from rich.console import Console
from rich.logging import RichHandler

err_console = Console(stderr=True)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(name)s: %(message)s", datefmt="[%X]",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=True)],
    )
    for noisy in ("amqtt", "transitions", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT/SIGTERM set `stop` so components shut down cleanly (offline status, drained queues)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
