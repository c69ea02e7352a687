"""requirements.lock: the whole runtime tree, pinned and hashed, in step with requirements.txt,
and what this environment really runs (make installs it with --require-hashes)."""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.lockfile import locked, requirements


def runtime_tree() -> set[str]:
    """Every distribution requirements.txt needs here, transitively (markers and extras honoured),
    read from the installed packages' metadata."""
    todo = list(requirements())
    seen: set[tuple[str, frozenset[str]]] = set()
    names = set()
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        extras = {"", *requirement.extras}
        for line in importlib.metadata.requires(name) or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra}) for extra in extras):
                todo.append(dependency)
    return names


def test_the_lock_pins_every_requirement_at_its_version():
    lock = locked()
    for requirement in requirements():
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{requirement} in requirements.txt is not pinned"
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is missing from requirements.lock: run make lock"
        assert lock[name].version == specifier.version, f"{name}: requirements.lock is stale, run make lock"


def test_every_locked_package_carries_its_hashes():
    for pin in locked().values():
        assert pin.hashes, f"{pin.name} has no --hash in requirements.lock"


def test_this_environment_runs_the_locked_versions():
    # make installs the lock first, then the development tools: none of those may move a runtime package.
    for pin in locked().values():
        assert importlib.metadata.version(pin.name) == pin.version, pin


def test_the_lock_holds_the_whole_runtime_tree_and_nothing_else():
    lock = set(locked())
    tree = runtime_tree()
    assert tree - lock == set(), "needed at run time but not locked: run make lock"
    assert lock - tree == set(), "locked but not needed by requirements.txt: run make lock"
