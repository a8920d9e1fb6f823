"""`omnisense lift report` on a cloud database: people-level windows and a store test, as HTML, JSON and CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
from typer.testing import CliRunner

from cloud_sync.cloud.db import CloudDB
from omnisense.cli import app

DAY = 86400
START = 1_767_225_600  # 2026-01-01 UTC


def seed_cloud(path) -> None:
    db = CloudDB(f"sqlite:///{path}")
    rng = np.random.default_rng(3)
    exposures, visits = [], []
    for i in range(400):
        exposed = i % 2 == 0
        t = START + 10 * DAY + int(rng.integers(0, 5 * DAY))
        exposures.append(("spring", f"p{i}", float(t), "exposed" if exposed else "control"))
        if rng.random() < (0.45 if exposed else 0.30):  # a true lift of +50 %
            visits.append({"campaign": "spring", "pseudonym": f"p{i}", "arrival": t + int(rng.integers(3600, 6 * DAY)),
                           "dwell_s": 300.0})
    db.upsert_exposures(exposures)
    stores = {"test-a": 1.0, "ctl-b": 0.8, "ctl-c": 1.3, "ctl-d": 0.5}
    for n, (store, scale) in enumerate(stores.items()):
        footfall = []
        for day in range(70):
            base = 100 * scale * (1 + 0.2 * np.sin(2 * np.pi * day / 7)) + rng.normal(0, 2)
            if store == "test-a" and day >= 56:
                base *= 1.2  # the campaign's effect on the test store
            footfall.append({"hour_start": START + day * DAY + 12 * 3600, "entries": int(base)})
        db.apply_batch(store, f"b{n}", b"", footfall, [], visits if store == "test-a" else [])


def test_the_report_shows_people_and_store_lift(tmp_path):
    seed_cloud(tmp_path / "cloud.db")
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["lift", "report", "--campaign", "spring", "--db-url",
                                      f"sqlite:///{tmp_path / 'cloud.db'}", "--out", str(out), "--treated", "test-a",
                                      "--controls", "ctl-b,ctl-c,ctl-d", "--post-start", "2026-02-26",
                                      "--permutations", "50"])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    assert [w["window_days"] for w in doc["windows"]] == [1, 7, 14, 30]
    assert all(w["n_exposed"] == 200 and w["n_control"] == 200 for w in doc["windows"])
    assert doc["windows"][-1]["lift"] > 0.2
    assert 0.1 < doc["geo"]["lift"] < 0.3 and abs(sum(doc["geo"]["weights"].values()) - 1) < 1e-6
    page = (out / "report.html").read_text()
    assert page.count("<svg") == 2 and "spring" in page and "synthetic control" in page
    rows = list(csv.DictReader((out / "windows.csv").open()))
    assert [r["window_days"] for r in rows] == ["1", "7", "14", "30"]


def test_a_campaign_without_exposures_is_a_clear_error(tmp_path):
    seed_cloud(tmp_path / "cloud.db")
    result = CliRunner().invoke(app, ["lift", "report", "--campaign", "autumn", "--db-url",
                                      f"sqlite:///{tmp_path / 'cloud.db'}", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "no exposures of campaign 'autumn'" in result.output
    result = CliRunner().invoke(app, ["lift", "report", "--campaign", "spring", "--treated", "test-a"])
    assert result.exit_code == 2 and "--post-start" in result.output
