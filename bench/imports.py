"""The import benchmark of issue 16: `python -m bench.imports [--users 100000] [--smoke]`.

Seeds nothing: it writes a JSON Lines file of USERS users as services moving in would hand them
over (every accepted hash format, half with usernames, some admins and inactive accounts), then
times, against its own PostgreSQL database and with the production settings:
`flask users import FILE` into the empty database, the rerun with `--on-conflict skip` (what a
restart after a crash costs), and `flask users export --with-hashes`. The goal: 100,000 users
imported in under 60 s (no hash is computed at import). Writes bench/IMPORT.md (smoke:
bench/out/IMPORT-smoke.md) and bench/out/import.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import report
from bench.seed import BenchDatabase
from bench.server import BIN, ROOT

GOAL_SECONDS = 60.0
GOAL_USERS = 100_000


def sample_hashes() -> list[str]:
    """One hash of each accepted format, each made by its library (at small costs: the import never checks them)."""
    import argon2
    import bcrypt
    from werkzeug.security import generate_password_hash

    from tests.data.make_moving_in import django_hash

    password = "bench import password"
    return [
        generate_password_hash(password, method="pbkdf2:sha256:1000"),
        generate_password_hash(password, method="scrypt:1024:8:1"),
        bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode(),
        "$2y$" + bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()[4:],
        django_hash(password),
        argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(password),
    ]


def write_users(path: Path, count: int) -> int:
    """The import file; returns its size in bytes."""
    hashes = sample_hashes()
    start = datetime(2015, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as handle:
        for number in range(count):
            record: dict = {"email": f"Moving.In{number}@Bench.Example", "name": f"Moving In {number}"}
            if number % 2 == 0:
                record["username"] = f"mover_{number}"
            if number % 1000 == 0:
                record["role"] = "admin"
            if number % 97 == 0:
                record["is_active"] = False
            record["email_verified"] = number % 3 != 0
            record["created_at"] = (start + timedelta(minutes=number)).isoformat()
            if number % 50 != 0:  # every 50th user has no hash: must reset
                record["password_hash"] = hashes[number % len(hashes)]
            handle.write(json.dumps(record) + "\n")
    return path.stat().st_size


def flask(env: dict[str, str], *args: str, stdout=subprocess.PIPE) -> tuple[float, subprocess.CompletedProcess]:
    """Run a flask command; its wall time and result."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(BIN / "flask"), *args], cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=1800
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
    return elapsed, done


def summary_of(done: subprocess.CompletedProcess) -> dict[str, int]:
    """The `users.*` lines of an import."""
    pairs = (line.split() for line in done.stdout.splitlines() if line.startswith("users."))
    return {name: int(value) for name, value in pairs}


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark, with its database dropped whatever happens."""
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    database = BenchDatabase(args.postgres_url)
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith(("DATABASE_", "APP_"))},
        "APP_ENV": "production",
        "DATABASE_URL": database.url,
        "JWT_SECRET_KEY": secrets.token_urlsafe(48),
        "FLASK_APP": "wsgi",
    }
    source = out / f"import-{args.users}.jsonl"
    size = write_users(source, args.users)
    print(f"wrote {source} ({args.users:,} users, {size / 1e6:.1f} MB)", flush=True)
    database.create()
    try:
        database.migrate(env)
        loads = os.getloadavg()
        seconds, done = flask(env, "users", "import", str(source))
        imported = summary_of(done)
        print(f"import: {seconds:.1f} s ({args.users / seconds:,.0f} users/s) {imported}", flush=True)
        rerun_seconds, again = flask(env, "users", "import", str(source), "--on-conflict", "skip")
        print(f"rerun with skip: {rerun_seconds:.1f} s {summary_of(again)}", flush=True)
        export_path = out / f"export-{args.users}.jsonl"
        with export_path.open("w") as handle:
            export_seconds, _ = flask(env, "users", "export", "--with-hashes", stdout=handle)
        exported = sum(1 for _ in export_path.open())
        print(f"export with hashes: {export_seconds:.1f} s ({exported:,} users)", flush=True)
        version = database.server_version()
    finally:
        database.drop()
    expected = {"users.imported": args.users, "users.updated": 0, "users.skipped": 0, "users.failed": 0}
    machine = {"load average (1, 5, 15 min) when the import started": report.load_average(loads)}
    return report.standalone_header("imports", version, machine) | {
        "users": args.users,
        "file_mb": size / 1e6,
        "import_s": seconds,
        "users_per_s": args.users / seconds,
        "summary": imported,
        "complete": imported == expected and exported == args.users,
        "rerun_skip_s": rerun_seconds,
        "rerun_summary": summary_of(again),
        "export_s": export_seconds,
        "exported": exported,
    }


def markdown(results: dict) -> str:
    """bench/IMPORT.md."""
    goal = results["import_s"] < GOAL_SECONDS * results["users"] / GOAL_USERS
    body = [
        "| step | users | seconds | users/s |",
        "|---|---:|---:|---:|",
        f"| `flask users import` into an empty database | {results['users']:,} | {results['import_s']:.1f} | "
        f"{results['users_per_s']:,.0f} |",
        f"| the rerun with `--on-conflict skip` (a restart) | {results['users']:,} | {results['rerun_skip_s']:.1f} | "
        f"{results['users'] / results['rerun_skip_s']:,.0f} |",
        f"| `flask users export --with-hashes` | {results['exported']:,} | {results['export_s']:.1f} | "
        f"{results['exported'] / results['export_s']:,.0f} |",
        "",
        f"Goal: {GOAL_USERS:,} users imported in under {GOAL_SECONDS:.0f} s (scaled to this run's size): "
        f"**{'met' if goal else 'NOT met'}**; every line imported and exported again: "
        f"**{'yes' if results['complete'] else 'NO'}** (summary {results['summary']}).",
        "",
        f"The file: {results['file_mb']:.1f} MB of JSON Lines, every accepted hash format (werkzeug pbkdf2 and "
        "scrypt, bcrypt `$2b$` and `$2y$`, Django `pbkdf2_sha256$`, argon2id), half the users with a username, "
        "every 50th without a hash. Production settings, batches of 1,000 lines, each one transaction with its "
        "audit events; the database is the machine's PostgreSQL, in a database of the run's own.",
    ]
    return report.standalone_markdown("Import benchmark (issue 16)", results, body)


def options(parser: argparse.ArgumentParser) -> None:
    """This benchmark's own option."""
    parser.add_argument("--users", type=int, help=f"users in the file (default {GOAL_USERS:,}; smoke 2,000)")


def main(argv: list[str] | None = None) -> int:
    """Run, write the reports; non-zero if the import was incomplete."""
    return report.standalone_main(argv, "import", ("users", 2000, GOAL_USERS), options, run, markdown)


if __name__ == "__main__":
    sys.exit(main())
