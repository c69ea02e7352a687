"""One scale step: the service on a freshly seeded database, every endpoint measured with real tokens."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.load import LoadResult, Scenario
from bench.seed import EMAIL, PASSWORD, Seeded, sign_access_tokens
from bench.server import Gunicorn

if TYPE_CHECKING:
    from bench.harness import Harness

ENDPOINTS = ("/checkToken", "/validate", "/me", "/login", "/refresh", "/password/forgot")


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

    def scenario(self, endpoint: str) -> Scenario:
        """The load of one endpoint, with freshly signed tokens where it needs them."""
        if endpoint in ("/checkToken", "/validate", "/me"):
            self.fresh_access()
        if endpoint == "/checkToken":
            return Scenario(
                "/checkToken", "POST", "/checkToken", "body", self.dir / "checktoken.jsonl", check_valid=True
            )
        if endpoint in ("/validate", "/me"):
            return Scenario(endpoint, "GET", endpoint, "bearer", self.dir / "access.txt")
        if endpoint == "/login":
            bodies = [json.dumps({"email": email, "password": PASSWORD}) for email in self.seeded.login_emails]
            return Scenario("/login", "POST", "/login", "body", self.write_lines("login.jsonl", bodies))
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
        """RSS of every worker now."""
        sample = {"label": label, "requests": self.served, "rss_mb": self.service.worker_rss_mb()}
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
        self.served += 5 + len(checks)
        print(f"  pre-flight: tokens valid, login and refresh work ({self.seeded.scale:,} users)", flush=True)

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
        if endpoint == "/refresh":
            pool = len(self.seeded.refresh_tokens) - self.refresh_used
            warm = self.refresh_scenario(
                int(pool * h.args.warmup / (h.args.warmup + h.args.duration)), "refresh-warm.jsonl"
            )
            self.load(warm, h.args.warmup)
            scenario = self.refresh_scenario(len(self.seeded.refresh_tokens) - self.refresh_used, "refresh.jsonl")
        else:
            self.load(self.scenario(endpoint), h.args.warmup)
            scenario = self.scenario(endpoint)
        result = self.load(scenario, h.args.duration)
        self.sample_memory(f"{endpoint} run")
        return h.row(endpoint, self.seeded.scale, result)

    def run(self) -> None:
        """Pre-flight, RSS at ~10k requests, every endpoint, RSS at ~200k requests."""
        args = self.h.args
        self.served += 1  # the health check that found the server up
        self.sample_memory("start")
        self.preflight()
        low = self.run_until(args.memory_at[0], f"~{args.memory_at[0]:,} requests")
        for endpoint in args.endpoints:
            self.measure(endpoint)
        high = self.run_until(args.memory_at[1], f"~{args.memory_at[1]:,} requests")
        self.h.memory[str(self.seeded.scale)] = {"low": low, "high": high, "timeline": self.timeline}
