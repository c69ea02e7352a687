"""requirements.lock as pip reads it: each pinned package with its version and hashes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
REQUIREMENTS = ROOT / "requirements.txt"
HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})\b")


@dataclass(frozen=True)
class Pin:
    """One locked package."""

    name: str
    version: str
    hashes: tuple[str, ...]


def locked(path: Path = LOCK) -> dict[str, Pin]:
    """Every entry of a pip-compile lock file, by canonical name."""
    text = path.read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        requirement, _, options = line.partition(" --")
        parsed = Requirement(requirement.strip())
        (specifier,) = parsed.specifier  # pip-compile writes exactly one: ==version
        assert specifier.operator == "==", line
        name = canonicalize_name(parsed.name)
        pins[name] = Pin(name, specifier.version, tuple(HASH.findall("--" + options)))
    return pins


def requirements(path: Path = REQUIREMENTS) -> list[Requirement]:
    """The top-level runtime requirements (requirements.txt holds no options or includes)."""
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line) for line in lines if line]
