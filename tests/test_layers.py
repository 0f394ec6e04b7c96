"""The import-linter contracts of .importlinter hold on the real tree: the one layered contract
(pricing < market.core < market.accounts < market.catalog < billing < market.web), Flask only in
market.web, pricing pure. This is the one place ``make test`` runs lint-imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    result = subprocess.run([Path(sys.executable).with_name("lint-imports"), str(ROOT / ".importlinter"),
                             "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in ("Packages keep to their layers (docs/DESIGN.md) KEPT", "only market.web imports Flask KEPT",
                     "pricing is pure KEPT", "no import circles among the siblings of any package KEPT"):
        assert contract in result.stdout
    assert "0 broken" in result.stdout
