"""The benchmark of issue 5: `python -m bench.harness [--smoke] [--scales 1000,1000000] [--duration S] …`.

For each scale it seeds its own PostgreSQL database with COPY, serves the service with the production
gunicorn config, drives every endpoint with wrk using real tokens, and compares with a bare Flask
endpoint served the same way in the same run. It prints a table, checks the goals, writes
bench/RESULTS.md (smoke: bench/out/RESULTS-smoke.md) and keeps everything else in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import secrets
import shlex
import signal
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet

from bench import report
from bench.load import LoadGenerator, LoadResult, Scenario, ensure_wrk
from bench.scale import ENDPOINTS, ScaleRun
from bench.seed import PASSWORD, BenchDatabase, seed
from bench.server import GUNICORN_CONFIG, ROOT, Gunicorn

UNREACHABLE_LIMIT = "100000000/minute"
# /login/mfa has never been measured above this; each of its logins needs a user of its own (a TOTP
# step is accepted once per user), so the pool of users with TOTP is sized to it for the run.
MFA_RATE_CAP = 600
HASH_SAMPLES = 21
# The settings the harness's own app (seeding, signing) shares with the service.
APP_KEYS = ("APP_ENV", "DATABASE_URL", "JWT_SECRET_KEY", "URL_PREFIX", "ENCRYPTION_KEY")
BASELINE, BASELINE_AGAIN = "baseline", "baseline again"
FLOOR, FLOOR_AGAIN = "WSGI floor", "WSGI floor again"
YARDSTICKS = (BASELINE, BASELINE_AGAIN, FLOOR, FLOOR_AGAIN)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; --smoke changes the defaults to a seconds-long run."""
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", help="users and revocations per step, comma-separated (default 1000,1000000)")
    parser.add_argument("--duration", type=float, help="measured seconds per endpoint (default 20; smoke 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each measurement (default 3; smoke 1)")
    parser.add_argument("--connections", type=int, help="keep-alive connections (default 16; smoke 4)")
    parser.add_argument(
        "--wrk-threads", type=int, default=1, help="wrk threads (default 1: leave the cores to the server)"
    )
    parser.add_argument("--sample", type=int, help="users whose tokens are benchmarked (default 1000; smoke 200)")
    parser.add_argument(
        "--refresh-pool", type=int, help="single-use refresh tokens per scale (default: sized to the run)"
    )
    parser.add_argument(
        "--memory-at", help="request counts of the two RSS samples (default 10000,200000; smoke 1000,4000)"
    )
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk (installed with apt-get if missing); the Python fallback only in smoke",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="S",
        help="py-spy the service for S seconds of /checkToken at the largest scale",
    )
    parser.add_argument(
        "--profile-endpoint",
        default="/checkToken",
        choices=["/checkToken", "/validate", "/me", "/login"],
        help="the endpoint under load while --profile records (default /checkToken)",
    )
    parser.add_argument(
        "--endpoints",
        help="measure only these endpoints, comma-separated (default: all of "
        f"{','.join(ENDPOINTS)}); for focused runs, not for RESULTS.md",
    )
    parser.add_argument(
        "--churn-rates",
        help="revocations per second from another process during /checkToken at the largest scale "
        "(default 0,50,500; 'none' to skip)",
    )
    report.standalone_arguments(parser)  # --smoke (a seconds-long run of every step), the server, the reports
    args = parser.parse_args(argv)
    smoke = args.smoke
    args.scales = [int(s) for s in (args.scales or ("1000" if smoke else "1000,1000000")).split(",")]
    args.duration = args.duration or (1 if smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 3)
    args.connections = args.connections or (4 if smoke else 16)
    args.sample = args.sample or (200 if smoke else 1000)
    args.memory_at = [int(n) for n in (args.memory_at or ("1000,4000" if smoke else "10000,200000")).split(",")]
    # /refresh has never gone faster than /checkToken; 1,500/s covers this machine with room to spare.
    args.refresh_pool = args.refresh_pool or max(
        1000, int((args.duration + args.warmup) * (1500 if not smoke else 1000))
    )
    args.endpoints = _endpoints(parser, args.endpoints)
    churn = args.churn_rates or "0,50,500"
    args.churn_rates = [] if churn == "none" else [int(rate) for rate in churn.split(",")]
    args.results = report.standalone_results(args, "RESULTS")
    return args


def _endpoints(parser: argparse.ArgumentParser, text: str | None) -> list[str]:
    """The endpoints to measure, in the table's order; every one unless --endpoints names some."""
    if not text:
        return list(ENDPOINTS)
    wanted = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(ENDPOINTS))
    if unknown:
        parser.error(f"--endpoints: unknown {', '.join(unknown)}; choose from {', '.join(ENDPOINTS)}")
    return [name for name in ENDPOINTS if name in wanted]


def gunicorn_sizes() -> tuple[int, int]:
    """Workers and threads as deploy/gunicorn.conf.py computes them in this environment."""
    config = runpy.run_path(str(GUNICORN_CONFIG))
    return int(config["workers"]), int(config["threads"])


class Harness:
    """The whole run: database, servers, every scale, the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        """Prepare; nothing starts until run()."""
        self.args = args
        self.out = args.out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.baseline_rps: dict[int, float] = {}
        self.floor_rps: dict[int, float] = {}
        self.memory: dict[str, Any] = {}
        self.seed_seconds: dict[str, float] = {}
        self.database = BenchDatabase(args.postgres_url)
        self.servers: list[Gunicorn] = []
        self.workers, self.threads = gunicorn_sizes()
        self.yardstick: tuple[Gunicorn, Scenario] | None = None  # the bare-Flask server and its scenario

    def row(self, endpoint: str, scale: int, result: LoadResult) -> dict[str, Any]:
        """A table row, with the ratios to this scale's baseline and WSGI floor."""
        baseline = self.baseline_rps.get(scale)
        floor = self.floor_rps.get(scale)
        row = {
            "endpoint": endpoint,
            "scale": scale,
            "rps": result.rps,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "non2xx": result.non2xx,
            "invalid": result.invalid,
            "errors": result.errors,
            "requests": result.requests,
            "wrapped": result.wrapped,
            "statuses": result.statuses or {},
            "ratio": result.rps / baseline if baseline else 1.0,
            "floor_ratio": result.rps / floor if floor else 1.0,
            "cpu_ms": result.cpu_ms,
        }
        self.rows.append(row)
        print(
            f"  {endpoint:<12} {scale:>9,}  {result.rps:9.1f} req/s  p50 {result.p50_ms:7.1f} ms  "
            f"p99 {result.p99_ms:7.1f} ms  non-2xx {result.non2xx}  invalid {result.invalid}  "
            f"errors {result.errors}  × baseline {row['ratio']:.2f}  × floor {row['floor_ratio']:.2f}  CPU/req "
            f"{'-' if result.cpu_ms is None else f'{result.cpu_ms:.3f} ms'}",
            flush=True,
        )
        return row

    def measured(self, server: Gunicorn, scenario: Scenario, seconds: float) -> LoadResult:
        """One timed run against `server`, with the CPU its workers spent per completed request."""
        before = server.cpu_seconds()
        result = self.loadgen.run(server.base_url, scenario, seconds)
        spent = server.cpu_seconds() - before
        result.cpu_ms = spent * 1000 / result.requests if result.requests else None
        return result

    def bracket(self, row: dict[str, Any], before: LoadResult, after: LoadResult) -> None:
        """Give `row` its ratios to the baseline runs right before and right after it (BRACKETED endpoints).

        The step's baseline runs are minutes away from most rows; the machine's speed moves over
        minutes (other tenants, clocks), and CPU per request with it. Runs seconds apart see about
        the same machine, and one before and one after cancel a steady drift.
        """
        rps = (before.rps + after.rps) / 2
        cpus = [r.cpu_ms for r in (before, after) if r.cpu_ms is not None]
        row["adjacent"] = {
            "rps": rps,
            "spread": abs(before.rps - after.rps) / rps if rps else 0.0,
            "cpu_ms": sum(cpus) / len(cpus) if cpus else None,
        }
        row["adjacent_ratio"] = row["rps"] / rps if rps else 1.0
        if cpus and row.get("cpu_ms") is not None:
            row["adjacent_cpu_ratio"] = row["cpu_ms"] / row["adjacent"]["cpu_ms"]
        print(
            f"    the baseline around it: {before.rps:.0f} and {after.rps:.0f} req/s: × {row['adjacent_ratio']:.2f}"
            + (f", CPU × {row['adjacent_cpu_ratio']:.2f}" if "adjacent_cpu_ratio" in row else ""),
            flush=True,
        )

    def adjacent_baseline(self) -> LoadResult:
        """Half a measured run of the bare-Flask baseline, for bracket()."""
        assert self.yardstick is not None
        server, ping = self.yardstick
        return self.measured(server, ping, self.args.duration / 2)

    def mfa_pool(self) -> int:
        """Users with TOTP for /login/mfa: one per login of its warm-up and run, plus the pre-flight's two."""
        if "/login/mfa" not in self.args.endpoints:
            return 0
        return int((self.args.warmup + self.args.duration) * MFA_RATE_CAP * 1.1) + 2

    def churn_pool(self) -> int:
        """Sessions to seed for bench/churn.py: every rate's share of the run, with a margin."""
        window = self.args.warmup + self.args.duration + 2
        return sum(int(rate * window * 1.1) + 10 for rate in self.args.churn_rates if rate)

    def yardsticks(
        self, baseline: Gunicorn, floor: Gunicorn, ping: Scenario, scale: int, *, again: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The bare-Flask endpoint, then the bare WSGI callable, one after the other (each warmed up)."""
        rows = []
        pairs = ((baseline, BASELINE_AGAIN if again else BASELINE), (floor, FLOOR_AGAIN if again else FLOOR))
        for server, name in pairs:
            self.loadgen.run(server.base_url, ping, self.args.warmup)
            rows.append(self.row(name, scale, self.measured(server, ping, self.args.duration)))
            if not again:  # a first ratio, until the second run gives the mean
                (self.baseline_rps if server is baseline else self.floor_rps)[scale] = rows[-1]["rps"]
        return rows[0], rows[1]

    def service_env(self) -> dict[str, str]:
        """Production settings against the bench database; plain HTTP (no TLS files)."""
        env = {key: value for key, value in os.environ.items() if key not in ("TLS_CERT_FILE", "TLS_KEY_FILE")}
        env.update(
            APP_ENV="production",
            DATABASE_URL=self.database.url,
            JWT_SECRET_KEY=secrets.token_urlsafe(48),
            FLASK_APP="wsgi",
            URL_PREFIX="",
            # Every request comes from 127.0.0.1: per-IP limits sized for real clients would turn the
            # measurement into one of 429s. The limiter still runs on every request; its limits are
            # just out of reach.
            RATELIMIT_LOGIN=UNREACHABLE_LIMIT,
            RATELIMIT_REFRESH=UNREACHABLE_LIMIT,
            RATELIMIT_OAUTH_TOKEN=UNREACHABLE_LIMIT,
            RATELIMIT_CHECKTOKEN=UNREACHABLE_LIMIT,
            RATELIMIT_PASSWORD_FORGOT=UNREACHABLE_LIMIT,
            RATELIMIT_MAIL_PER_ADDRESS=UNREACHABLE_LIMIT,
            # /password/forgot only queues its work in the outbox (no delivery worker runs here), but
            # production answers 503 without a mail transport, so one is named.
            MAIL_URL="smtp+plain://127.0.0.1:2525",
            FRONTEND_URL="https://bench.example",
            # TOTP seeds are encrypted at rest; /login/mfa needs the key (app/services/secretbox.py).
            ENCRYPTION_KEY=Fernet.generate_key().decode(),
            # As deployed (compose, Kubernetes): two workers share their per-IP limits through Redis,
            # which production requires with more than one worker (config.check_serving).
            REDIS_URL=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
            RATELIMIT_KEY_PREFIX=f"bench{secrets.token_hex(4)}",
        )
        return env

    def time_hash(self) -> tuple[str, list[float]]:
        """A real hash of PASSWORD, and the times of HASH_SAMPLES verifications, with production parameters."""
        from app.services import passwords

        with self.app.app_context():
            stored = passwords.hash_password(PASSWORD)
            # argon2id itself, as the service configures it: not the service's queueing around it.
            hasher, candidate = passwords.hasher(), passwords.normalize(PASSWORD)
            hasher.verify(stored, candidate)
            times = []
            for _ in range(HASH_SAMPLES):
                started = time.perf_counter()
                ok = hasher.verify(stored, candidate)
                times.append(time.perf_counter() - started)
                assert ok
        return stored, times

    def choose_loadgen(self) -> LoadGenerator:
        """wrk, installed if missing; the Python client only for the smoke."""
        args = self.args
        wrk = None
        if args.loadgen in ("auto", "wrk"):
            wrk = ensure_wrk(timeout=120 if args.smoke else 600)
            if wrk is None and (args.loadgen == "wrk" or not args.smoke):
                raise RuntimeError("wrk is required for a full run and could not be installed (apt-get install wrk)")
            if wrk is None:
                print("wrk unavailable: the smoke falls back to the Python load generator", flush=True)
        return LoadGenerator(wrk, connections=args.connections, threads=args.wrk_threads)

    def run(self) -> dict[str, Any]:
        """Everything, with the database dropped and the servers stopped whatever happens."""
        started = time.monotonic()
        # The code and the date as the run starts: the servers import the tree now and at each scale.
        self.code, self.date = report.code_version(ROOT), datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        try:
            return self._run(started)
        finally:
            for server in self.servers:
                server.stop()
            self.database.drop()
            print(f"dropped database {self.database.name}", flush=True)

    def _run(self, started: float) -> dict[str, Any]:
        """The run proper."""
        from app import create_app

        args = self.args
        load_start = os.getloadavg()
        if load_start[0] > 1.0:
            print(
                f"warning: load average {load_start[0]:.1f} when the run starts: the machine has been busy, "
                "and if it stays busy the figures will be noisy (see the baseline's spread)",
                flush=True,
            )
        self.loadgen = self.choose_loadgen()
        self.database.create()
        print(f"created database {self.database.name}", flush=True)
        env = self.service_env()
        self.database.migrate(env)
        self.app = create_app({key: env[key] for key in APP_KEYS})
        password_hash, hash_times = self.time_hash()
        self.password_hash = password_hash
        hash_seconds = statistics.median(hash_times)
        cores = len(os.sched_getaffinity(0))
        login = {
            "hash_ms": hash_seconds * 1000,
            "hash_ms_min_max": [min(hash_times) * 1000, max(hash_times) * 1000],
            "hash_samples": HASH_SAMPLES,
            "ceiling_rps": self.workers / hash_seconds,
            "cores": cores,
            "cpu_ceiling_rps": min(self.workers, cores) / hash_seconds,
        }
        print(
            f"argon2id verification: {hash_seconds * 1000:.1f} ms (median of {HASH_SAMPLES}, "
            f"{min(hash_times) * 1000:.1f}–{max(hash_times) * 1000:.1f}); "
            f"login ceiling {login['ceiling_rps']:.1f}/s",
            flush=True,
        )

        baseline = Gunicorn("baseline", "bench.baseline:app", env, self.out / "gunicorn-baseline.log", "/ping")
        self.servers.append(baseline)
        baseline.start(expected_workers=self.workers)
        floor = Gunicorn("floor", "bench.baseline:floor", env, self.out / "gunicorn-floor.log", "/ping")
        self.servers.append(floor)
        floor.start(expected_workers=self.workers)
        ping = Scenario("baseline GET /ping", "GET", "/ping")
        self.yardstick = (baseline, ping)

        for scale in args.scales:
            print(f"scale {scale:,}: seeding", flush=True)
            seeded = seed(
                self.database,
                self.app,
                scale=scale,
                sample_size=args.sample,
                refresh_pool=args.refresh_pool,
                password_hash=password_hash,
                churn_pool=self.churn_pool() if scale == max(args.scales) else 0,
                mfa_pool=self.mfa_pool(),
            )
            self.seed_seconds[str(scale)] = seeded.seconds
            phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in seeded.phases.items())
            print(f"  seeded {seeded.counts} in {seeded.seconds:.1f} s ({phases})", flush=True)

            first, first_floor = self.yardsticks(baseline, floor, ping, scale, again=False)

            service = Gunicorn(
                f"service-{scale}", "wsgi:app", env, self.out / f"gunicorn-service-{scale}.log", "/health"
            )
            self.servers.append(service)
            service.start(expected_workers=self.workers)
            step = ScaleRun(self, seeded, service)
            step.run()
            # The baseline again, after the service's runs: the ratios use the mean of both, and
            # their spread shows how much the machine's speed moved during the step.
            # The floor likewise; every row's ratios use the means.
            second, second_floor = self.yardsticks(baseline, floor, ping, scale, again=True)
            self.baseline_rps[scale] = (first["rps"] + second["rps"]) / 2
            self.floor_rps[scale] = (first_floor["rps"] + second_floor["rps"]) / 2
            second["spread"] = abs(first["rps"] - second["rps"]) / self.baseline_rps[scale]
            second_floor["spread"] = abs(first_floor["rps"] - second_floor["rps"]) / self.floor_rps[scale]
            for row in self.rows:
                if row["scale"] == scale:
                    row["ratio"] = row["rps"] / self.baseline_rps[scale]
                    row["floor_ratio"] = row["rps"] / self.floor_rps[scale]
            if args.profile and scale == max(args.scales):
                from bench.profile import profile_service

                profile_service(step, args.profile, args.profile_endpoint)
            service.stop()
            self.servers.remove(service)

        results = {
            "date": self.date,
            "command": shlex.join(["python", "-m", "bench.harness", *sys.argv[1:]]),
            "code": self.code
            + (
                ""
                if report.code_version(ROOT) == self.code
                else f" (the tree was {report.code_version(ROOT)} at the end)"
            ),
            "smoke": args.smoke,
            "scales": args.scales,
            "duration": args.duration,
            "warmup": args.warmup,
            "connections": args.connections,
            "sample": args.sample,
            "workers": self.workers,
            "threads": self.threads,
            "machine": report.machine(self.database.server_version(), self.loadgen.name, self.workers, self.threads)
            | {"load average (1, 5, 15 min) when the run started": _loads(load_start)},
            "rows": self.rows,
            "login": login,
            "memory": self.memory,
            "seed_seconds": self.seed_seconds,
            "elapsed_s": time.monotonic() - started,
        }
        return results


def _loads(values: tuple[float, float, float]) -> str:
    """A load average triple as text."""
    return " ".join(f"{value:.2f}" for value in values)


def main(argv: list[str] | None = None) -> int:
    """Run, print the table and the goals, write the reports; non-zero only if the run itself failed."""
    args = parse_args(argv)
    # A SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the database is dropped and servers stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results = Harness(args).run()
    goals = report.evaluate(results)
    results["goals"] = goals
    print()
    print(report.summary_text(results, goals))
    (args.out_dir / ("results-smoke.json" if args.smoke else "results.json")).write_text(json.dumps(results, indent=2))
    report.write_markdown(args.results, results, goals)
    print(f"\nwrote {args.results} and {args.out_dir}/ in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
