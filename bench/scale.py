"""One scale step: the service on a freshly seeded database, every endpoint measured with real tokens."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyotp

from app.services import clients, mfa
from bench.load import LoadResult, Scenario
from bench.report import BRACKETED, churn_name
from bench.seed import EMAIL, PASSWORD, Seeded, sign_access_tokens
from bench.server import BIN, ROOT, Gunicorn

if TYPE_CHECKING:
    from bench.harness import Harness

ENDPOINTS = (
    "/checkToken",
    "/introspect",
    "/validate",
    "/me",
    "/login",
    "/login/mfa",
    "/refresh",
    "/password/forgot",
    "/oauth/token",
)
SINGLE_USE = ("/refresh", "/login/mfa")  # every line of their data files can be spent once


def call(base: str, method: str, path: str, body: dict | None = None, token: str | None = None):
    """One HTTP call: (status, parsed JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def introspect(base: str, authorization: str, token: str) -> dict:
    """One POST /introspect as a service client: the parsed answer."""
    request = urllib.request.Request(
        base + "/introspect", data=urllib.parse.urlencode({"token": token}).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return {"status": error.code, "body": error.read().decode(errors="replace")}


def oauth_token(base: str, authorization: str) -> tuple[int, dict]:
    """One client credentials grant at POST /oauth/token: (status, parsed answer)."""
    request = urllib.request.Request(base + "/oauth/token", data=b"grant_type=client_credentials", method="POST")
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class ScaleRun:
    """One scale step: the service on a freshly seeded database, every endpoint measured."""

    def __init__(self, harness: Harness, seeded: Seeded, service: Gunicorn) -> None:
        """Bind the step's data and server."""
        self.h = harness
        self.seeded = seeded
        self.service = service
        self.dir = harness.out / f"scale-{seeded.scale}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.served = 0  # requests the service answered since it started
        self.timeline: list[dict[str, Any]] = []
        self.refresh_used = 0
        self.churn_used = 0
        self.mfa_used = 2  # the first two are the pre-flight's
        self._oauth_basic: str | None = None
        self._client_basic: str | None = None

    def write_lines(self, name: str, lines: list[str]) -> Path:
        """A data file for the load generator, one request's token or body per line."""
        path = self.dir / name
        path.write_text("\n".join(lines) + "\n")
        return path

    def fresh_access(self) -> list[str]:
        """New access tokens for the sample (they live 15 minutes; a run is re-signed before it starts)."""
        tokens = sign_access_tokens(self.h.app, self.seeded)
        self.write_lines("access.txt", tokens)
        self.write_lines("checktoken.jsonl", [json.dumps({"token": token}) for token in tokens])
        return tokens

    def client_basic(self) -> str:
        """The Authorization header of a service client registered for /introspect (made once per step)."""
        if self._client_basic is None:
            with self.h.app.app_context():
                client, secret = clients.create(name=f"bench-{self.seeded.scale}")
                pair = f"{client.id}:{secret}"
            self._client_basic = "Basic " + base64.b64encode(pair.encode()).decode()
        return self._client_basic

    def oauth_basic(self) -> str:
        """Basic credentials of a client registered as an operator does: `flask clients create` (app/cli_clients.py)."""
        if self._oauth_basic is None:
            name = f"bench-oauth-{self.seeded.scale}"
            done = subprocess.run([str(BIN / "flask"), "clients", "create", "--name", name], cwd=ROOT,
                                  env=self.service.env, capture_output=True, text=True, timeout=120)  # fmt: skip
            found = dict(
                line.split(": ", 1)
                for line in done.stdout.splitlines()
                if line.startswith(("client_id:", "client_secret:"))
            )
            if done.returncode != 0 or len(found) != 2:
                raise RuntimeError(f"flask clients create failed: {done.stdout[-1000:]} {done.stderr[-2000:]}")
            pair = f"{found['client_id'].strip()}:{found['client_secret'].strip()}"
            self._oauth_basic = "Basic " + base64.b64encode(pair.encode()).decode()
        return self._oauth_basic

    def mfa_logins(self, users: list[tuple[str, str]], seconds: float) -> list[dict[str, str]]:
        """A pending two-step login per user, as POST /login leaves it, and a TOTP code good for `seconds` more.

        The challenge rows are what app/services/mfa.py challenge() writes after a right password
        (the SHA-256 of a 256-bit mfa_token, the user, the fingerprint of the verified password hash,
        five minutes), inserted in one go just before the run: making them through /login would cost
        an argon2id verification each, which is /login's row, not this one's. The code is the user's
        RFC 6238 code for the current 30-s step, or the next one when the current step and the one after
        it end too soon for the run: the service accepts one step either side (mfa.VALID_WINDOW), and
        each user's step is accepted once, which is why every login has a user of its own.
        """
        now = time.time()
        step = int(now // 30)
        if (step + 1 + mfa.VALID_WINDOW) * 30 - now < seconds + 3:
            step += 1
        created = datetime.now(UTC)
        expires = created + mfa.CHALLENGE_LIFETIME
        fingerprint = mfa._digest(self.h.password_hash)
        bodies, rows = [], []
        for user_id, seed in users:
            token = secrets.token_urlsafe(32)
            rows.append((mfa._digest(token), user_id, fingerprint, created, expires))
            bodies.append({"mfa_token": token, "code": pyotp.TOTP(seed).at(step * 30)})
        conn = self.h.database.connect()
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO mfa_challenges (token_hash, user_id, password_fingerprint, created_at, expires_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    rows,
                )
            conn.commit()
        finally:
            conn.close()
        return bodies

    def mfa_scenario(self, count: int, name: str, seconds: float) -> Scenario:
        """The next `count` users with TOTP, each with a fresh challenge and code: none is used twice."""
        users = self.seeded.mfa_users[self.mfa_used : self.mfa_used + count]
        self.mfa_used += len(users)
        bodies = self.mfa_logins(users, seconds)
        path = self.write_lines(name, [json.dumps(body) for body in bodies])
        return Scenario("/login/mfa", "POST", "/login/mfa", "body", path, partition=True)

    def scenario(self, endpoint: str) -> Scenario:
        """The load of one endpoint, with freshly signed tokens where it needs them."""
        if endpoint in ("/checkToken", "/introspect", "/validate", "/me"):
            tokens = self.fresh_access()
        if endpoint == "/introspect":
            # The same tokens as /checkToken's, asked the RFC 7662 way by a service client.
            lines = [f"{self.client_basic()}\ttoken={token}" for token in tokens]
            path = self.write_lines("introspect.form", lines)
            return Scenario("/introspect", "POST", "/introspect", "form", path, check_active=True)
        if endpoint == "/checkToken":
            return Scenario(
                "/checkToken", "POST", "/checkToken", "body", self.dir / "checktoken.jsonl", check_valid=True
            )
        if endpoint in ("/validate", "/me"):
            return Scenario(endpoint, "GET", endpoint, "bearer", self.dir / "access.txt")
        if endpoint == "/login":
            bodies = [json.dumps({"email": email, "password": PASSWORD}) for email in self.seeded.login_emails]
            return Scenario("/login", "POST", "/login", "body", self.write_lines("login.jsonl", bodies))
        if endpoint == "/oauth/token":
            path = self.write_lines("oauth.form", [f"{self.oauth_basic()}\tgrant_type=client_credentials"])
            return Scenario("/oauth/token", "POST", "/oauth/token", "form", path)
        if endpoint == "/password/forgot":
            # Half real accounts, half unknown addresses: the answer and the work are the same for both.
            emails = [
                *self.seeded.login_emails,
                *(EMAIL.format(f"nobody{n}") for n in range(len(self.seeded.login_emails))),
            ]
            bodies = [json.dumps({"email": email}) for email in emails]
            path = self.write_lines("forgot.jsonl", bodies)
            return Scenario("/password/forgot", "POST", "/password/forgot", "body", path)
        raise ValueError(endpoint)

    def refresh_scenario(self, count: int, name: str) -> Scenario:
        """The next `count` unspent refresh tokens of the pool: a token is never handed out twice."""
        tokens = self.seeded.refresh_tokens[self.refresh_used : self.refresh_used + count]
        self.refresh_used += len(tokens)
        path = self.write_lines(name, [json.dumps({"refresh_token": token}) for token in tokens])
        return Scenario("/refresh", "POST", "/refresh", "body", path, partition=True)

    def load(self, scenario: Scenario, seconds: float) -> LoadResult:
        """Run load against the service, counting what it served."""
        result = self.h.measured(self.service, scenario, seconds)
        self.served += result.requests + result.errors
        return result

    def sample_memory(self, label: str) -> dict[str, Any]:
        """RSS (and PSS, USS) of every worker now."""
        sample = {
            "label": label,
            "requests": self.served,
            "rss_mb": self.service.worker_rss_mb(),
            "pss_uss_mb": self.service.worker_pss_uss_mb(),
        }
        self.timeline.append(sample)
        return sample

    def preflight(self) -> None:
        """Every kind of benchmarked request succeeds once, or the run stops here: never measure errors."""
        base = self.service.base_url
        tokens = self.fresh_access()
        for token in tokens[:5]:
            status, body = call(base, "POST", "/checkToken", {"token": token})
            if status != 200 or not body.get("valid"):
                raise RuntimeError(f"a seeded token is not valid: /checkToken answered {status} {body}")
        checks = [
            ("GET", "/validate", None, tokens[0], 200),
            ("GET", "/me", None, tokens[0], 200),
            ("POST", "/login", {"email": self.seeded.login_emails[0], "password": PASSWORD}, None, 200),
            ("POST", "/login", {"email": EMAIL.format("nobody"), "password": PASSWORD}, None, 401),
            ("POST", "/refresh", {"refresh_token": self.seeded.spare_refresh_token}, None, 200),
            ("POST", "/refresh", {"refresh_token": self.seeded.spare_refresh_token}, None, 401),
            ("POST", "/password/forgot", {"email": self.seeded.login_emails[0]}, None, 202),
        ]
        for method, path, body, token, expected in checks:
            status, answer = call(base, method, path, body, token)
            if status != expected:
                raise RuntimeError(f"pre-flight {method} {path}: expected {expected}, got {status} {answer}")
        if self.seeded.mfa_users:
            # A two-step login completes once; the same code again, with a new challenge, is refused.
            first, replay = self.mfa_logins([self.seeded.mfa_users[0]] * 2, 5)
            status, answer = call(base, "POST", "/login/mfa", first)
            if status != 200 or not answer.get("access_token"):
                raise RuntimeError(f"pre-flight POST /login/mfa: expected 200 with tokens, got {status} {answer}")
            status, answer = call(base, "POST", "/login/mfa", replay)
            if status != 400:
                raise RuntimeError(f"pre-flight POST /login/mfa: a replayed code answered {status} {answer}")
            self.served += 2
        if "/oauth/token" in self.h.args.endpoints:
            status, answer = oauth_token(base, self.oauth_basic())
            if status != 200 or not answer.get("access_token"):
                raise RuntimeError(f"pre-flight POST /oauth/token: expected 200 with a token, got {status} {answer}")
            self.served += 1
        introspected = introspect(base, self.client_basic(), tokens[0])
        if introspected.get("active") is not True:
            raise RuntimeError(f"pre-flight POST /introspect: a seeded token is not active: {introspected}")
        self.served += 6 + len(checks)
        print(
            f"  pre-flight: tokens valid and active, login and refresh work ({self.seeded.scale:,} users)",
            flush=True,
        )

    def run_until(self, target: int, label: str) -> dict[str, Any]:
        """/checkToken load until the service has answered `target` requests, then an RSS sample."""
        rate = None  # unknown until a first one-second run has measured it
        while self.served < target:
            remaining = target - self.served
            # Runs short enough to overshoot the target by ~10% at most, even when the rate was misjudged.
            seconds = 1.0 if rate is None else max(1.0, min(60.0, remaining / rate, 0.1 * target / rate))
            result = self.load(self.scenario("/checkToken"), seconds)
            rate = max(result.rps, 50.0)
        return self.sample_memory(label)

    def measure(self, endpoint: str) -> dict[str, Any]:
        """Warm up, then one timed run of `endpoint`."""
        h = self.h
        if endpoint == "/login/mfa":
            pool = len(self.seeded.mfa_users) - self.mfa_used
            warm_share = int(pool * h.args.warmup / (h.args.warmup + h.args.duration))
            self.load(self.mfa_scenario(warm_share, "mfa-warm.jsonl", h.args.warmup), h.args.warmup)
            scenario = self.mfa_scenario(pool - warm_share, "mfa.jsonl", h.args.duration)
        elif endpoint == "/refresh":
            pool = len(self.seeded.refresh_tokens) - self.refresh_used
            warm = self.refresh_scenario(
                int(pool * h.args.warmup / (h.args.warmup + h.args.duration)), "refresh-warm.jsonl"
            )
            self.load(warm, h.args.warmup)
            scenario = self.refresh_scenario(len(self.seeded.refresh_tokens) - self.refresh_used, "refresh.jsonl")
        else:
            # The warm-up presents the measured run's own tokens: it warms what it is there to warm
            # (each worker's verified-token memory and revocation view). Tokens live 15 minutes.
            scenario = self.scenario(endpoint)
            self.load(scenario, h.args.warmup)
        if endpoint not in BRACKETED:
            result = self.load(scenario, h.args.duration)
            self.sample_memory(f"{endpoint} run")
            return h.row(endpoint, self.seeded.scale, result)
        before = h.adjacent_baseline()
        result = self.load(scenario, h.args.duration)
        after = h.adjacent_baseline()
        self.sample_memory(f"{endpoint} run")
        row = h.row(endpoint, self.seeded.scale, result)
        h.bracket(row, before, after)
        return row

    def churn_window(self) -> float:
        """Seconds a churn process revokes for: the warm-up, the measured run, and a margin either side."""
        return self.h.args.warmup + self.h.args.duration + 2

    def measure_churn(self, rate: int) -> dict[str, Any]:
        """/checkToken while bench/churn.py, another process, revokes sessions of the same users at `rate`/s.

        The revoked sessions are never those of the tokens presented, so every answer should still
        be valid (the row counts any that is not). The achieved rate is counted in the database:
        sessions revoked between the start and the end of the measured run.
        """
        h = self.h
        process = None
        if rate:
            count = int(rate * self.churn_window() * 1.1) + 10
            targets = self.seeded.churn_sessions[self.churn_used : self.churn_used + count]
            self.churn_used += len(targets)
            path = self.write_lines(f"churn-{rate}.tsv", [f"{user}\t{sid}" for user, sid in targets])
            command = [sys.executable, "-m", "bench.churn", str(path), "--rate", str(rate),
                       "--seconds", str(self.churn_window())]  # fmt: skip
            process = subprocess.Popen(command, cwd=ROOT, env=self.service.env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
            ready = process.stdout.readline() if process.stdout else ""
            if ready.strip() != "ready":
                process.kill()
                raise RuntimeError(f"bench.churn did not start: {ready} {process.communicate()[1][-2000:]}")
            process.stdin.write("go\n")
            process.stdin.flush()
        try:
            scenario = self.scenario("/checkToken")
            self.load(scenario, h.args.warmup)  # the measured run's own tokens, as in measure()
            window_start, started = datetime.now(UTC), time.monotonic()
            result = self.load(scenario, h.args.duration)
            window_end, elapsed = datetime.now(UTC), time.monotonic() - started
        finally:
            report: dict[str, Any] = {}
            if process is not None:
                out, err = process.communicate(timeout=self.churn_window() + 60)
                line = next((row for row in out.splitlines() if row.startswith("CHURN_JSON ")), None)
                if process.returncode != 0 or line is None:
                    raise RuntimeError(f"bench.churn failed ({process.returncode}): {out[-1000:]} {err[-2000:]}")
                report = json.loads(line[len("CHURN_JSON ") :])
        revoked = self.revoked_between(window_start, window_end) if rate else 0
        self.sample_memory(f"churn {rate}/s run")
        row = h.row(churn_name(rate), self.seeded.scale, result)
        row.update(revocations=revoked, revocations_per_s=revoked / elapsed if elapsed else 0.0, churn=report)
        print(
            f"    {revoked:,} sessions revoked by bench.churn in the run: {row['revocations_per_s']:.1f}/s "
            f"(target {rate}/s; {report.get('late', 0)} late, {report.get('failed', 0)} failed, "
            f"{report.get('mean_ms', 0):.1f} ms per revocation over {report.get('threads', 0)} threads)"
            + (f"; first failure: {report['first_error']}" if report.get("first_error") else ""),
            flush=True,
        )
        return row

    def revoked_between(self, start: datetime, end: datetime) -> int:
        """Sessions whose revoked_at falls in [start, end): the database's own count of what the churn did."""
        conn = self.h.database.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM sessions WHERE revoked_at >= %s AND revoked_at < %s", (start, end))
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def run(self) -> None:
        """Pre-flight, RSS at ~10k requests, every endpoint, RSS at ~200k requests."""
        args = self.h.args
        self.served += 1  # the health check that found the server up
        self.sample_memory("start")
        self.preflight()
        low = self.run_until(args.memory_at[0], f"~{args.memory_at[0]:,} requests")
        for endpoint in args.endpoints:
            self.measure(endpoint)
        if self.seeded.churn_sessions:
            for rate in args.churn_rates:
                self.measure_churn(rate)
        high = self.run_until(args.memory_at[1], f"~{args.memory_at[1]:,} requests")
        self.h.memory[str(self.seeded.scale)] = {"low": low, "high": high, "timeline": self.timeline}
