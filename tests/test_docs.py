"""The documents point at real things: every test a document cites exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A pytest id: tests/x.py::test_name, or tests/x.py::Class::test_name for a test method.
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(?:(\w+)::)?(\w+)")


def _references() -> list[tuple[str, str, str]]:
    found = []
    for document in DOCUMENTS:
        for path, cls, name in REFERENCE.findall(document.read_text()):
            found.append((document.name, path, f"{cls}::{name}" if cls else name))
    return found


def test_documents_cite_tests():
    assert len(_references()) > 100


@pytest.mark.parametrize(("document", "path", "name"), sorted(set(_references())))
def test_cited_test_exists(document, path, name):
    source = ROOT / path
    assert source.is_file(), f"{document} cites {path}, which does not exist"
    cls, _, function = name.rpartition("::")
    text = source.read_text()
    assert not cls or re.search(rf"^class {cls}\b", text, re.M), f"{document} cites {path}::{name}: no class {cls}"
    assert re.search(rf"^\s*(async )?def {function}\(", text, re.M), f"{document} cites {path}::{name}"
