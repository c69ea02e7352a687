"""The results: the machine, the table, the goals of issue 18, as text for the terminal and bench/RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.server import ROOT

# Goal thresholds of issue 18 (each a ratio measured side by side in one run).
GOAL_THROUGHPUT_RATIO = 0.85  # /checkToken, /validate, /introspect vs the bare Flask baseline
GOAL_THROUGHPUT_ENDPOINTS = ("/checkToken", "/validate", "/introspect")
GOAL_LOGIN_RATIO = 0.85  # /login vs workers / one hash verification
GOAL_ME_RATIO = 0.50  # /me vs the bare Flask baseline
GOAL_CHURN_RATIO = 1.2  # /checkToken p99 and throughput at 50 revocations/s vs no revocations
GOAL_CHURN_RATE = 50
NEW_PATHS = ("/login/mfa", "/password/forgot", "/oauth/token", "/introspect")
# Checks carried over from issues 5 and 15: still meaningful, no longer the goals.
GOAL_INTROSPECT_RATIO = 0.9  # /introspect vs /checkToken: the same judge on the same fast path
GOAL_P99_SCALE_RATIO = 1.2  # /checkToken p99 at the largest scale vs the smallest
GOAL_RSS_MB = 100.0  # resident memory per worker
GOAL_RSS_DRIFT = 0.10  # between the ~10k and ~200k request samples
# Issue 10: /checkToken and /validate at least this fast against the baseline runs around them.
GOAL_VERIFY_RATIO = 0.80
GOAL_VERIFY_ENDPOINTS = ("/checkToken", "/validate")
# Measured between two baseline runs of half their length (Harness.bracket): the rows with ratio goals.
BRACKETED = ("/checkToken", "/introspect", "/validate", "/me")
NOISY_SPREAD = 0.10  # the baseline's two runs of one step further apart than this: the machine was busy


def machine(postgres_version: str, loadgen: str, workers: int, threads: int) -> dict[str, str]:
    """What the run ran on: cores, CPU, RAM, kernel, Python, PostgreSQL, load generator, gunicorn."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    return {
        "cores (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU": model.group(1).strip() if model else platform.processor() or "unknown",
        "RAM": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "unknown",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "PostgreSQL": postgres_version,
        "load generator": loadgen,
        "gunicorn": f"deploy/gunicorn.conf.py: {workers} workers × {threads} threads (gthread), plain HTTP",
    }


def code_version(root: Path) -> str:
    """The commit measured, and whether the work tree had changes on top of it."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty=+uncommitted changes"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip().replace("+", " + ") if done.returncode == 0 else "unknown"


def mark(ok: bool | None) -> str:
    """met / NOT met / n/a."""
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Check each goal of issue 18 (and the carried-over checks of issues 5 and 15) against the figures."""
    rows = results["rows"]
    goals: list[dict[str, Any]] = []
    by = {(row["endpoint"], row["scale"]): row for row in rows}

    def goal(label: str, checks: list[tuple[str, bool]]) -> None:
        """A goal met where every figure measured for it (figure, met) is; n/a where none was measured."""
        met = all(ok for _, ok in checks) if checks else None
        goals.append({"goal": label, "figures": "; ".join(figure for figure, _ in checks), "ok": met})

    def ratio_goal(label: str, endpoints: tuple[str, ...], threshold: float) -> None:
        """Each row's ratio to the baseline runs around it where it has them (bracketed), else to the step's."""
        goal(
            label,
            [
                (
                    f"{endpoint} @ {scale:,}: {_goal_ratio(row):.2f}× "
                    + ("the baseline around it" if "adjacent_ratio" in row else "baseline")
                    + f" ({row['ratio']:.2f}× the step's baseline, {row.get('floor_ratio', 0):.2f}× WSGI floor)",
                    _goal_ratio(row) >= threshold,
                )
                for endpoint in endpoints
                for scale in results["scales"]
                if (row := by.get((endpoint, scale))) is not None
            ],
        )

    ratio_goal(
        f"1. {', '.join(GOAL_THROUGHPUT_ENDPOINTS)} ≥ {GOAL_THROUGHPUT_RATIO}× baseline",
        GOAL_THROUGHPUT_ENDPOINTS,
        GOAL_THROUGHPUT_RATIO,
    )

    ceiling = results["login"]["ceiling_rps"]
    checks = []
    for scale in results["scales"]:
        if (row := by.get(("/login", scale))) is not None:
            row["ceiling_ratio"] = ratio = row["rps"] / ceiling
            checks.append(
                (f"@ {scale:,}: {row['rps']:.1f}/s = {ratio:.2f}× of {ceiling:.1f}/s", ratio >= GOAL_LOGIN_RATIO)
            )
    goal(f"2. /login ≥ {GOAL_LOGIN_RATIO}× (workers ÷ one hash verification)", checks)

    ratio_goal(f"3. /me ≥ {GOAL_ME_RATIO}× baseline", ("/me",), GOAL_ME_RATIO)
    refresh = [
        f"/refresh @ {scale:,}: {row['ratio']:.2f}× baseline, {row['cpu_ms']:.2f} CPU ms/req"
        for scale in results["scales"]
        if (row := by.get(("/refresh", scale))) is not None and row.get("cpu_ms") is not None
    ]
    if refresh:  # "bounded by its database writes" has no number: the figure, and PROFILE.md says where it goes
        goals[-1]["figures"] += "; " + "; ".join(refresh) + " (no threshold: see bench/PROFILE.md)"

    missing = [row["endpoint"] for row in rows if row.get("cpu_ms") is None]
    goals.append(
        {
            "goal": "4. CPU ms per request beside every throughput figure",
            "figures": f"{len(rows) - len(missing)} of {len(rows)} rows"
            + (f"; none for {', '.join(sorted(set(missing)))}" if missing else ""),
            "ok": not missing if rows else None,
        }
    )

    quiet = by.get((churn_name(0), max(results["scales"])))
    busy = by.get((churn_name(GOAL_CHURN_RATE), max(results["scales"])))
    if quiet and busy and busy["rps"] and quiet["p99_ms"]:
        p99_ratio, rps_ratio = busy["p99_ms"] / quiet["p99_ms"], quiet["rps"] / busy["rps"]
        figures = [
            f"@ {max(results['scales']):,}: p99 {busy['p99_ms']:.1f} / {quiet['p99_ms']:.1f} ms = {p99_ratio:.2f}×, "
            f"throughput {quiet['rps']:,.0f} / {busy['rps']:,.0f} req/s = {rps_ratio:.2f}× "
            f"(achieved {busy.get('revocations_per_s', 0):.1f} revocations/s)"
        ]
        for row in rows:
            if row["endpoint"].startswith("/checkToken @ churn") and row is not quiet and row is not busy:
                figures.append(
                    f"{row['endpoint'].split('@ ')[1]}: p99 {row['p99_ms']:.1f} ms, {row['rps']:,.0f} req/s "
                    f"(achieved {row.get('revocations_per_s', 0):.1f}/s)"
                )
        churn_ok: bool | None = (
            p99_ratio <= GOAL_CHURN_RATIO
            and rps_ratio <= GOAL_CHURN_RATIO
            and busy.get("revocations_per_s", 0) >= 0.9 * GOAL_CHURN_RATE
        )
        goals.append(
            {
                "goal": f"5. /checkToken under {GOAL_CHURN_RATE} revocations/s within {GOAL_CHURN_RATIO}× of quiet "
                "(p99 and throughput)",
                "figures": "; ".join(figures),
                "ok": churn_ok,
            }
        )
    else:
        goals.append({"goal": "5. /checkToken under revocation churn", "figures": "not measured", "ok": None})

    parts, ok, measured = [], True, False
    for endpoint in NEW_PATHS:
        found = [row for row in rows if row["endpoint"] == endpoint]
        if not found:
            parts.append(f"{endpoint}: not measured")
            ok = False
            continue
        measured = True
        for row in found:
            bad = row["non2xx"] + row["invalid"] + row["errors"]
            parts.append(
                f"{endpoint} @ {row['scale']:,}: {row['rps']:,.0f}/s"
                + (f", {row['cpu_ms']:.2f} CPU ms/req" if row.get("cpu_ms") is not None else "")
                + (f", {bad:,} failed" if bad else "")
            )
            ok = ok and not bad
    goals.append(
        {
            "goal": "6. the new paths in the table, every answer a success (relay, mail, import: "
            "bench/RELAY.md, bench/MAIL.md, bench/IMPORT.md)",
            "figures": "; ".join(parts),
            "ok": ok if measured else None,
        }
    )

    checks = []
    for scale, memory in results["memory"].items():
        low, high = memory["low"], memory["high"]
        if not low or not high:
            continue
        peak = max(high["rss_mb"].values())
        drifts = [abs(high["rss_mb"][pid] - rss) / rss for pid, rss in low["rss_mb"].items() if pid in high["rss_mb"]]
        drift = max(drifts) if drifts else float("inf")
        memory["max_drift"] = drift
        rise, label = biggest_rise(memory["timeline"])
        figure = (
            f"@ {int(scale):,}: max {peak:.1f} MB, drift {drift * 100:.1f}% "
            f"({low['requests']:,} → {high['requests']:,} requests; biggest rise {rise:+.1f} MB in one worker "
            f"during the {label})"
        )
        checks.append((figure, peak <= GOAL_RSS_MB and drift <= GOAL_RSS_DRIFT))
    goal(f"7. RSS per worker ≤ {GOAL_RSS_MB:.0f} MB and flat (±{GOAL_RSS_DRIFT:.0%})", checks)

    small, large = min(results["scales"]), max(results["scales"])
    if small != large and ("/checkToken", small) in by and ("/checkToken", large) in by:
        a, b = by[("/checkToken", small)]["p99_ms"], by[("/checkToken", large)]["p99_ms"]
        ratio = b / a if a else float("inf")
        results["p99_scale_ratio"] = ratio
        goals.append(
            {
                "goal": f"issue 5: /checkToken p99 @ {large:,} ≤ {GOAL_P99_SCALE_RATIO}× p99 @ {small:,}",
                "figures": f"{b:.1f} ms / {a:.1f} ms = {ratio:.2f}×",
                "ok": ratio <= GOAL_P99_SCALE_RATIO,
            }
        )

    # Issue 15: /introspect is /checkToken asked the RFC 7662 way, on the same fast path.
    checks = []
    for scale in results["scales"]:
        introspect, check = by.get(("/introspect", scale)), by.get(("/checkToken", scale))
        if introspect and check and check["rps"]:
            ratio = introspect["rps"] / check["rps"]
            figure = f"@ {scale:,}: {introspect['rps']:,.0f}/s ÷ {check['rps']:,.0f}/s = {ratio:.2f}×"
            checks.append((figure, ratio >= GOAL_INTROSPECT_RATIO))
    goal(f"issue 15: /introspect ≥ {GOAL_INTROSPECT_RATIO}× /checkToken", checks)
    ratio_goal(
        f"issue 10: {', '.join(GOAL_VERIFY_ENDPOINTS)} ≥ {GOAL_VERIFY_RATIO}× baseline",
        GOAL_VERIFY_ENDPOINTS,
        GOAL_VERIFY_RATIO,
    )
    return goals


def _goal_ratio(row: dict[str, Any]) -> float:
    """The ratio a goal judges: to the baseline runs around the row when it has them."""
    return float(row.get("adjacent_ratio", row["ratio"]))


def churn_name(rate: int) -> str:
    """The table name of a /checkToken row measured while revocations arrive at `rate` per second."""
    return f"/checkToken @ churn {rate}/s"


def biggest_rise(timeline: list[dict[str, Any]]) -> tuple[float, str]:
    """The largest RSS increase of one worker between two consecutive samples, and the step it happened in."""
    best, where = 0.0, "-"
    for before, after in zip(timeline, timeline[1:], strict=False):
        for pid, rss in after["rss_mb"].items():
            if pid in before["rss_mb"] and rss - before["rss_mb"][pid] > best:
                best, where = rss - before["rss_mb"][pid], after["label"]
    return best, where


def noise_note(results: dict[str, Any]) -> str | None:
    """A warning when the baseline moved between its two runs of a step: the machine's speed changed."""
    spreads = [row["spread"] for row in results["rows"] if "spread" in row]
    worst = max(spreads, default=0.0)
    if worst <= NOISY_SPREAD:
        return None
    return (
        f"**Noise.** The baseline moved by up to {worst:.0%} between its two runs of one step, so the machine's "
        "speed changed during this run (other processes competing for the CPUs): single figures, p99 above all, "
        "carry that noise. Ratios of runs close together in time are the more reliable ones."
    )


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """The main table: one row per endpoint and scale."""
    out = []
    for row in results["rows"]:
        scale = "-" if row["scale"] is None else f"{row['scale']:,}"
        bad = row["non2xx"] + row["invalid"] + row["errors"]
        notes = []
        if row["invalid"]:
            notes.append(f"{row['invalid']} valid:false")
        if row["errors"]:
            notes.append(f"{row['errors']} socket errors")
        if row.get("statuses"):
            notes.append("status " + ", ".join(f"{code}×{n}" for code, n in sorted(row["statuses"].items())))
        if "spread" in row:
            yardstick = "× WSGI floor" if row["endpoint"].startswith("WSGI floor") else "× baseline"
            notes.append(f"{row['spread']:.0%} apart from the first; {yardstick} uses their mean")
        if "revocations_per_s" in row:
            churn = row.get("churn") or {}
            notes.append(
                f"{row['revocations_per_s']:.1f} revocations/s achieved by another process "
                f"({row.get('revocations', 0):,} in the run"
                + (f"; {churn['mean_ms']:.1f} ms each over {churn['threads']} threads" if churn else "")
                + ")"
            )
        if "adjacent" in row:
            around = row["adjacent"]
            notes.append(
                f"between two baseline runs of half its length: {around['rps']:,.0f} req/s, "
                f"{around['spread']:.0%} apart; × that baseline {row['adjacent_ratio']:.2f}"
                + (f", CPU × {row['adjacent_cpu_ratio']:.2f}" if "adjacent_cpu_ratio" in row else "")
            )
        if row.get("wrapped"):
            notes.append(f"pool exhausted: {row['wrapped']} tokens re-sent")
        out.append(
            [
                row["endpoint"],
                scale,
                f"{row['rps']:,.0f}" if row["rps"] >= 100 else f"{row['rps']:.1f}",
                f"{row['p50_ms']:.1f}",
                f"{row['p99_ms']:.1f}",
                f"{bad:,}",
                f"{row['ratio']:.2f}",
                f"{row.get('floor_ratio', 0):.2f}",
                "-" if row.get("cpu_ms") is None else f"{row['cpu_ms']:.3f}",
                _cpu_ratio(results, row),
                f"{row['requests']:,}",
                "; ".join(notes),
            ]
        )
    return out


HEADERS = [
    "endpoint",
    "scale",
    "req/s",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "× baseline",
    "× WSGI floor",
    "CPU ms/req",
    "CPU × baseline",
    "requests",
    "notes",
]


def _cpu_ratio(results: dict[str, Any], row: dict[str, Any]) -> str:
    """The row's CPU per request over the bare-Flask endpoint's at the same scale (mean of its two runs)."""
    base = [
        r["cpu_ms"]
        for r in results["rows"]
        if r["scale"] == row["scale"] and r["endpoint"] in ("baseline", "baseline again") and r.get("cpu_ms")
    ]
    if not base or row.get("cpu_ms") is None:
        return "-"
    return f"{row['cpu_ms'] / (sum(base) / len(base)):.2f}"


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def memory_rows(results: dict[str, Any]) -> list[list[str]]:
    """RSS of every worker at each sample point; PSS and USS too when the samples carry them."""
    out = []
    shared = memory_has_pss(results)
    for scale, memory in results["memory"].items():
        for sample in memory["timeline"]:
            values = sorted(sample["rss_mb"].values())
            row = [
                f"{int(scale):,}",
                sample["label"],
                f"{sample['requests']:,}",
                " / ".join(f"{value:.1f}" for value in values),
                f"{max(values):.1f}" if values else "-",
            ]
            if shared:
                pairs = [
                    sample.get("pss_uss_mb", {}).get(pid) for pid in sorted(sample["rss_mb"], key=sample["rss_mb"].get)
                ]
                row.append(" / ".join("-" if pair is None else f"{pair[0]:.1f}, {pair[1]:.1f}" for pair in pairs))
            out.append(row)
    return out


def memory_has_pss(results: dict[str, Any]) -> bool:
    """Whether the memory samples carry PSS and USS (bench/server.py worker_pss_uss_mb)."""
    return any("pss_uss_mb" in sample for memory in results["memory"].values() for sample in memory["timeline"])


def memory_headers(results: dict[str, Any]) -> list[str]:
    """The memory table's columns: RSS (the goal's figure), then PSS and USS when sampled."""
    headers = ["scale", "after", "requests served", "RSS per worker (MB)", "max MB"]
    return headers + (["PSS, USS per worker (MB)"] if memory_has_pss(results) else [])


def summary_text(results: dict[str, Any], goals: list[dict[str, Any]]) -> str:
    """Everything the terminal shows at the end."""
    login = results["login"]
    lines = [text_table(HEADERS, table_rows(results)), ""]
    lines.append(
        f"login ceiling: {results['workers']} workers ÷ {login['hash_ms']:.1f} ms per argon2id verification "
        f"= {login['ceiling_rps']:.1f}/s (CPU-bound: {login['cores']} cores ÷ {login['hash_ms']:.1f} ms "
        f"= {login['cpu_ceiling_rps']:.1f}/s)"
    )
    if "p99_scale_ratio" in results:
        lines.append(f"/checkToken p99 ratio, largest ÷ smallest scale: {results['p99_scale_ratio']:.2f}×")
    lines += ["", text_table(memory_headers(results), memory_rows(results)), ""]
    lines += [f"[{mark(goal['ok']):>7}] {goal['goal']}: {goal['figures']}" for goal in goals]
    return "\n".join(lines)


def write_markdown(path: Path, results: dict[str, Any], goals: list[dict[str, Any]]) -> None:
    """bench/RESULTS.md: machine, date, command, table, goals."""
    login = results["login"]
    low, high = login["hash_ms_min_max"]
    seeding = ", ".join(f"{int(s):,}: {t:.1f} s" for s, t in results["seed_seconds"].items())
    text = [
        "# Benchmark results",
        "",
        f"Run {results['date']} with `{results['command']}`"
        + (" (smoke: seconds-long, not a measurement)" if results["smoke"] else "")
        + f" on commit {results['code']}; took {results['elapsed_s'] / 60:.1f} min. "
        "Produced by `bench/harness.py`; see README.md, “Benchmarks”.",
        "",
        "## Machine",
        "",
        md_table(["", ""], [[key, value] for key, value in results["machine"].items()]),
        "",
        "## Throughput and latency",
        "",
        f"{results['duration']} s per endpoint after a {results['warmup']} s warm-up, {results['connections']} "
        f"keep-alive connections, every request with a real token (rotating over {results['sample']:,} users). "
        "“× baseline” is req/s over the bare-Flask endpoint (`bench/baseline.py`, same gunicorn configuration), "
        "measured before and again after the service's runs at the same scale step of the same run; the mean of "
        "the two is the yardstick and their spread shows how steady the machine was. “× WSGI floor” is req/s over "
        "a bare WSGI callable (`bench.baseline:floor`: the same JSON body, no framework, no routing) served the "
        "same way and measured right after each baseline run: gunicorn's own floor, so the column says how close "
        "to what this server configuration can do at all each endpoint is. non-2xx counts non-2xx "
        f"answers, `valid: false` answers of /checkToken and socket errors. Seeding with COPY ({seeding}). "
        "“CPU ms/req” is the user plus system CPU time of the server's workers during the timed run "
        "(`/proc/<pid>/stat`) divided by the requests it completed: steadier than req/s on a shared machine, "
        "and the figure to compare across commits; “CPU × baseline” divides it by the bare-Flask endpoint's. "
        f"{', '.join(BRACKETED)} are measured between two runs of the baseline of half their length each, "
        "right before and right after them: the notes give the ratios to those (the machine's speed moves over "
        "the minutes between the step's own baseline runs, hardly over seconds), and the goals judge those.",
        "",
        md_table(HEADERS, table_rows(results)),
        "",
        *([note, ""] if (note := noise_note(results)) else []),
        "Rows “/checkToken @ churn N/s”: `/checkToken` at the largest scale while another process "
        "(`bench/churn.py`) revokes sessions of the very users whose tokens are presented (never those tokens' "
        "own sessions) at N per second through `sessions.revoke_sessions`, one commit and NOTIFY each; the "
        "achieved rate is counted in the database over the measured run. `/login/mfa`: users with TOTP "
        "(extra to the scale's users), each with a fresh pending two-step login and its current code, each "
        "used once (the service accepts a TOTP step once per user). `/oauth/token`: client credentials for "
        "a client made with `flask clients create`.",
        "",
        f"/login ceiling: {results['workers']} worker processes ÷ {login['hash_ms']:.1f} ms (median of "
        f"{login['hash_samples']} argon2id verifications, {low:.1f}–{high:.1f} ms, production parameters, "
        f"measured in this run before any load) = {login['ceiling_rps']:.1f}/s. "
        f"The machine can hash at most {login['cores']} at a time: {login['cpu_ceiling_rps']:.1f}/s.",
        "",
        "## Memory",
        "",
        "VmRSS of each gunicorn worker of the service, counted in requests the service answered since it started."
        + (
            " RSS (the goal's figure) counts every resident page, shared libraries included, in full in each "
            "worker; PSS divides shared pages among the processes sharing them (what the machine pays per "
            "worker); USS counts the worker's own pages only (what stopping it would free). Same worker order."
            if memory_has_pss(results)
            else ""
        ),
        "",
        md_table(memory_headers(results), memory_rows(results)),
        "",
        "## Goals (issue 18)",
        "",
        md_table(["goal", "measured", ""], [[g["goal"], g["figures"], mark(g["ok"])] for g in goals]),
        "",
    ]
    if any(g["ok"] is False for g in goals):
        text += [
            "A goal marked NOT met: its profile, and why, are in `bench/PROFILE.md` (a section per endpoint).",
            "",
        ]
    text += [
        "RSS after the /login run includes the 19 MiB argon2id block a worker keeps while logins queue; "
        "it is returned when the queue empties (`app/services/passwords.py`), as the next rows show.",
        "",
    ]
    path.write_text("\n".join(text))


# --- the standalone benchmarks (bench/imports.py, bench/relay.py, bench/mail.py) ------------------

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"


def standalone_arguments(parser: Any) -> None:
    """The options every benchmark shares (the harness too): --smoke, the PostgreSQL server, where reports go."""
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run (the test suite)")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("TEST_POSTGRES_URL") or DEFAULT_POSTGRES,
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument(
        "--results", type=Path, help="Markdown report (default bench/<NAME>.md; smoke OUT/<NAME>-smoke.md)"
    )


def standalone_results(args: Any, name: str) -> Path:
    """Where a benchmark's Markdown goes: --results, else bench/NAME.md (smoke: OUT/NAME-smoke.md)."""
    return args.results or (args.out_dir / f"{name}-smoke.md" if args.smoke else ROOT / "bench" / f"{name}.md")


def write_standalone(args: Any, name: str, results: dict[str, Any], text: str) -> int:
    """Write a standalone benchmark's JSON (OUT/name.json) and Markdown; 0 if everything arrived once, else 1."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = name.lower() + ("-smoke" if args.smoke else "")
    (args.out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2))
    args.results.write_text(text)
    print(f"wrote {args.results}")
    return 0 if results["complete"] else 1


def standalone_main(
    argv: list[str] | None,
    name: str,
    size: tuple[str, int, int],
    options: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    markdown: Callable[[dict[str, Any]], str],
) -> int:
    """A standalone benchmark's command line, run and reports: `python -m bench.MODULE [options] [--smoke]`.

    `name` names the reports (bench/NAME.md, OUT/name.json); `size` is (the dest of the benchmark's
    size option, its smoke size, its full size); `options` adds the benchmark's own options; the
    program's name and description are those of the module `run` is in. Non-zero if incomplete.
    """
    module = sys.modules[run.__module__]
    program = module.__spec__.name if module.__spec__ else module.__name__  # bench.mail, also as __main__
    parser = argparse.ArgumentParser(prog=f"python -m {program}", description=(module.__doc__ or "").split("\n\n")[0])
    options(parser)
    standalone_arguments(parser)
    args = parser.parse_args(argv)
    dest, smoke, full = size
    setattr(args, dest, getattr(args, dest) or (smoke if args.smoke else full))
    args.results = standalone_results(args, name.upper())
    results = run(args)
    return write_standalone(args, name, results, markdown(results))


def load_average(loads: tuple[float, float, float]) -> str:
    """os.getloadavg() as the reports print it."""
    return " ".join(f"{value:.2f}" for value in loads)


def standalone_header(module: str, postgres_version: str, machine_extra: dict[str, str]) -> dict[str, Any]:
    """The date, command, code and machine of a standalone run (one process: no load generator, no gunicorn)."""
    ran_on = {
        key: value
        for key, value in machine(postgres_version, "-", 1, 1).items()
        if key not in ("load generator", "gunicorn")
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", f"bench.{module}", *sys.argv[1:]]),
        "code": code_version(ROOT),
        "machine": ran_on | machine_extra,
    }


def standalone_markdown(title: str, results: dict[str, Any], body: list[str]) -> str:
    """A standalone benchmark's Markdown: its title, the command that ran, `body`, the machine it ran on."""
    lines = [
        f"# {title}",
        "",
        f"`{results['command']}` on {results['date']}, code {results['code']}.",
        "",
        *body,
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in results["machine"].items()],
        "",
    ]
    return "\n".join(lines)
