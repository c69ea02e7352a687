"""`--profile S`: py-spy every worker of the service for S seconds of load (`--profile-endpoint`), then summarize.

py-spy is not a project dependency: `.venv/bin/pip install py-spy` before asking for a profile.
The raw collapsed stacks go to bench/out/profile-<endpoint>-<scale>-<mode>.txt and a summary (top
functions by inclusive and by own time, own time by package) to profile-summary-<endpoint>-<scale>-<mode>.txt.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.server import BIN

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
PACKAGES = (
    "app",
    "bench",
    "sqlalchemy",
    "psycopg2",
    "jwt",
    "flask_jwt_extended",
    "flask_smorest",
    "flask_limiter",
    "limits",
    "flask_login",
    "flask_cors",
    "flask_sqlalchemy",
    "marshmallow",
    "webargs",
    "apispec",
    "flask",
    "werkzeug",
    "gunicorn",
    "json",
    "logging",
    "uuid",
    "datetime",
    "cryptography",
    "argon2",
)


def package_of(path: str) -> str:
    """The package a frame's file belongs to (site-packages name, or app/, or the stdlib module)."""
    parts = Path(path).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for name in ("app", "bench"):
        if name in parts:
            return name
    stem = Path(path).stem
    return f"stdlib:{parts[-2] if stem == '__init__' and len(parts) > 1 else stem}"


def summarize(raw: Path, top: int = 25) -> str:
    """Inclusive and own shares per function, and own share per package, from py-spy's raw output."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    own_package: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for frame in stack.split(";"):
            match = FRAME.match(frame)
            if match and not frame.startswith(("process ", "thread ")):
                frames.append((f"{match['func']} ({_short(match['file'])})", package_of(match["file"])))
        if not frames:
            continue
        total += count
        for name in {name for name, _ in frames}:
            inclusive[name] += count
        own[frames[-1][0]] += count
        own_package[frames[-1][1]] += count
    if not total:
        return "no samples\n"

    def block(title: str, counter: Counter[str], rows_wanted: int = top) -> list[str]:
        rows = [f"{title}", ""]
        rows += [f"{count / total * 100:6.1f}%  {name}" for name, count in counter.most_common(rows_wanted)]
        return [*rows, ""]

    lines = [f"{total} samples", ""]
    lines += block("inclusive (function and everything it calls)", inclusive, 2 * top)
    lines += block("own time (the function itself)", own)
    lines += block("own time by package", own_package)
    return "\n".join(lines)


def _short(path: str) -> str:
    """A path from the package root on: site-packages/x/y.py → x/y.py; /work/main/app/a.py → app/a.py."""
    parts = Path(path).parts
    for anchor in ("site-packages",):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    for name in ("app", "bench"):
        if name in parts:
            return "/".join(parts[parts.index(name) :])
    return "/".join(parts[-2:])


MODES = {
    # Threads py-spy does not see as idle: Python work plus waits inside C calls (database round trips).
    "busy": [],
    # Only samples holding the GIL: where the Python CPU time goes.
    "gil": ["--gil"],
}


def profile_service(step, seconds: float, endpoint: str = "/checkToken") -> list[Path]:
    """Record every worker while `endpoint` is under load, once per mode; write raw stacks and summaries."""
    pyspy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
    if pyspy is None:
        print("  py-spy is not installed (.venv/bin/pip install py-spy): no profile", flush=True)
        return []
    out, scale = step.h.out, step.seeded.scale
    written = []
    for mode, flags in MODES.items():
        name = endpoint.strip("/").lower()
        # Warmed as a measured run is (bench/scale.py): the same tokens first, unrecorded, so the
        # profile shows the steady state and not every worker's first sight of each token.
        scenario = step.scenario(endpoint)
        step.load(scenario, step.h.args.warmup)
        raw = out / f"profile-{name}-{scale}-{mode}.txt"
        recorder = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(step.service.process.pid),
                "--subprocesses",
                "--nonblocking",
                "--full-filenames",
                *flags,
                "--rate",
                "200",
                "--duration",
                str(int(seconds) + 2),
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)  # let py-spy attach to every worker before the load starts
        result = step.load(scenario, seconds)
        _, errors = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0 or not raw.exists():
            print(f"  py-spy failed: {errors[-1000:]}", flush=True)
            continue
        summary = out / f"profile-summary-{name}-{scale}-{mode}.txt"
        header = f"{endpoint} at {scale:,} users, {result.rps:.0f} req/s while profiled, py-spy mode {mode}\n\n"
        summary.write_text(header + summarize(raw))
        print(f"  profile: {summary}", flush=True)
        written.append(summary)
    return written
