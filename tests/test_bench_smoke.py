"""The benchmark harness cannot rot: a seconds-long `python -m bench.harness --smoke` against PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import scale
from tests.databases import POSTGRES_SERVER, selected_backends

ROOT = Path(__file__).resolve().parents[1]
# Every endpoint bench/scale.py defines, between the yardsticks measured first and again last.
ENDPOINTS = (
    "baseline",
    "WSGI floor",
    *scale.ENDPOINTS,
    "/checkToken @ churn 0/s",
    "/checkToken @ churn 50/s",
    "/checkToken @ churn 500/s",
    "baseline again",
    "WSGI floor again",
)
TIMEOUT = 240  # the smoke takes ~60 s (churn rows included); a first run may also apt-get install wrk


@pytest.fixture
def postgres_server(request) -> str:
    """The PostgreSQL server URL, or a skip when it is unreachable (a failure under CI=true, in conftest)."""
    if "postgresql" not in selected_backends():
        pytest.skip("TEST_BACKENDS leaves out postgresql")
    problem = request.config.backend_problems.get("postgresql")
    if problem is not None:
        pytest.skip(f"postgresql unreachable: {problem}")
    return POSTGRES_SERVER


def run_smoke(module: str, postgres_server: str, out_dir: Path) -> subprocess.CompletedProcess:
    """`python -m bench.MODULE --smoke`; on a time-out it gets SIGTERM first, so it drops its database."""
    command = [sys.executable, "-m", f"bench.{module}", "--smoke", "--postgres-url", postgres_server,
               "--out-dir", str(out_dir)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.terminate()
        output, _ = process.communicate(timeout=60)
        pytest.fail(f"the smoke took over {TIMEOUT} s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def standalone_smoke(module: str, name: str, postgres_server: str, out_dir: Path) -> tuple[dict, str]:
    """A standalone benchmark's smoke run, which must succeed: its results (complete) and its Markdown."""
    done = run_smoke(module, postgres_server, out_dir)
    assert done.returncode == 0, done.stdout[-6000:]
    results = json.loads((out_dir / f"{name}-smoke.json").read_text())
    assert results["complete"] is True
    return results, (out_dir / f"{name.upper()}-smoke.md").read_text()


def test_bench_smoke_measures_every_endpoint_with_valid_tokens(postgres_server, tmp_path):
    done = run_smoke("harness", postgres_server, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:]

    results = json.loads((tmp_path / "results-smoke.json").read_text())
    rows = {row["endpoint"]: row for row in results["rows"]}
    assert sorted(rows) == sorted(ENDPOINTS)
    for endpoint, row in rows.items():
        assert row["requests"] > 0 and row["rps"] > 0, endpoint
        assert f"\n{endpoint} " in done.stdout, f"no table row for {endpoint}"
    # Every token the load used was valid: no 401, and no 200 saying "valid": false; every two-step
    # login had a fresh challenge and a code not used before; every client credentials grant succeeded.
    churn = [name for name in ENDPOINTS if "churn" in name]
    for endpoint in ("/checkToken", "/introspect", "/validate", "/me", "/login/mfa", "/oauth/token", *churn):
        row = rows[endpoint]
        assert (row["non2xx"], row["invalid"], row["errors"]) == (0, 0, 0), row
    # The revocations came from another process, and the database saw them during the run.
    assert rows["/checkToken @ churn 0/s"]["revocations"] == 0
    assert rows["/checkToken @ churn 50/s"]["revocations"] > 0, rows["/checkToken @ churn 50/s"]
    assert rows["/checkToken @ churn 500/s"]["revocations"] > rows["/checkToken @ churn 50/s"]["revocations"]
    # The WSGI floor is served and every row has its ratio to it.
    assert all(row["floor_ratio"] > 0 for row in rows.values())
    # The verification endpoints ran between two baseline runs, and their goals judge those (issue 10).
    for endpoint in ("/checkToken", "/introspect", "/validate", "/me"):
        assert rows[endpoint]["adjacent"]["rps"] > 0 and rows[endpoint]["adjacent_ratio"] > 0, rows[endpoint]
    assert "adjacent" not in rows["/login"]
    assert "the baseline around it" in next(goal["figures"] for goal in results["goals"] if "issue 10" in goal["goal"])
    assert results["login"]["ceiling_rps"] > 0
    assert all(sample["rss_mb"] for sample in results["memory"]["1000"]["timeline"])
    assert "## Goals (issue 18)" in (tmp_path / "RESULTS-smoke.md").read_text()


def test_bench_import_smoke_imports_and_exports_every_user(postgres_server, tmp_path):
    """`python -m bench.imports --smoke`: the import benchmark of issue 16 cannot rot either."""
    results, markdown = standalone_smoke("imports", "import", postgres_server, tmp_path)
    assert results["summary"] == {"users.imported": 2000, "users.updated": 0, "users.skipped": 0, "users.failed": 0}
    assert results["rerun_summary"]["users.skipped"] == 2000 and results["exported"] == 2000
    assert "| `flask users import` into an empty database | 2,000 |" in markdown


def test_bench_relay_smoke_publishes_every_event_once(postgres_server, tmp_path):
    """`python -m bench.relay --smoke`: the relay benchmark of issue 14 cannot rot either."""
    from tests.broker import require_broker

    require_broker()
    results, markdown = standalone_smoke("relay", "relay", postgres_server, tmp_path)
    assert {name: row["events"] for name, row in results["scenarios"].items()} == {"1,000 users": 2000, "one user": 200}
    assert all(row["per_s"] > 0 for row in results["scenarios"].values())
    assert "| 2,000 | 1,000 users |" in markdown


def test_bench_mail_smoke_delivers_every_mail_once(postgres_server, tmp_path):
    """`python -m bench.mail --smoke`: the mail delivery benchmark of issue 18 cannot rot either."""
    results, markdown = standalone_smoke("mail", "mail", postgres_server, tmp_path)
    assert results["received"] == 200 and results["outbox"] == {"sent": 200}
    assert results["per_s"] > 0
    assert "| 200 |" in markdown
