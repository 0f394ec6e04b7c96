"""The map stays true: every file and every module (or name in one) that README.md and
docs/DESIGN.md point to exists, so a newcomer following them never lands on a room that moved."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "docs/DESIGN.md")
TOP = "market|billing|pricing|tests|tools|bench|migrations|clients"
PATH = re.compile(rf"(?<![\w./-])((?:{TOP})/[\w/.-]*\w)")
DOTTED = re.compile(r"(?<![\w./])((?:market|billing|pricing)(?:\.\w+)+)")
# Made by the run itself, not kept in the tree.
RUN_ARTIFACTS = {"tests/e2e/artifacts"}


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_name_only_files_that_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = sorted({p for p in PATH.findall(text) if p not in RUN_ARTIFACTS and not (ROOT / p).exists()})
    assert not missing, f"{doc} points to files that are not there: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_name_only_modules_that_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = sorted({name for name in DOTTED.findall(text) if not _resolves(name)})
    assert not missing, f"{doc} names modules or functions that are not there: {missing}"
