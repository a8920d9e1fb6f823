"""`omnisense lift report`: a campaign's lift as an HTML page with plots, plus JSON and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command()
    def report(
        campaign: Annotated[str, typer.Option(help="The campaign to report on.")],
        db_url: Annotated[str, typer.Option(help="The cloud database: sqlite:///path or postgresql://...")] =
            "sqlite:///.omnisense/cloud.db",
        out: Annotated[Path, typer.Option(help="Directory for report.html, report.json and windows.csv.")] =
            Path("lift-report"),
        windows: Annotated[str, typer.Option(help="Attribution windows in days.")] = "1,7,14,30",
        min_dwell_s: Annotated[float, typer.Option(help="Shortest stay that counts as a visit.")] = 60.0,
        treated: Annotated[str, typer.Option(help="Test stores for the store-level part, comma-separated.")] = "",
        controls: Annotated[str, typer.Option(help="Candidate control stores, comma-separated.")] = "",
        post_start: Annotated[str | None, typer.Option(help="First day of the test period (YYYY-MM-DD).")] = None,
        permutations: Annotated[int, typer.Option(min=20, help="Permutations of the conformal p-value.")] = 200,
    ) -> None:
        """Write a campaign's lift report: people-level lift by window (exposed vs hold-out) and, with
        --treated/--controls/--post-start, store-level lift of the test stores against a synthetic control."""
        from cloud_sync.cloud.db import CloudDB
        from cloud_sync.lift.report import build_report, write_report

        try:
            days = [int(w) for w in windows.split(",") if w.strip()]
        except ValueError:
            raise typer.BadParameter(f"windows must be whole days separated by commas, got {windows!r}") from None
        test = [s for s in treated.split(",") if s]
        others = [s for s in controls.split(",") if s]
        if bool(test) != bool(post_start) or (test and not others):
            raise typer.BadParameter("the store-level part needs --treated, --controls and --post-start together")
        with _err.status(f"computing the lift of {campaign}"):
            try:
                result = build_report(CloudDB(db_url), campaign, days, min_dwell_s, test, others, post_start,
                                      permutations)
            except ValueError as err:
                _err.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False)
                raise typer.Exit(2) from None
        paths = write_report(result, out)
        for kind, path in paths.items():
            typer.echo(f"{kind}: {path}")
