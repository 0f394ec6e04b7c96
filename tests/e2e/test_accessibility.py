"""Automated accessibility checks of the main pages with axe-core (vendored from npm in
tests/e2e/vendor, MPL-2.0), in both languages: no violation of serious or critical impact."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from market.catalog.models import Dataset

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
SERIOUS = ("serious", "critical")


def axe_violations(page) -> list[dict]:
    """axe-core's WCAG 2.x A/AA violations of serious or critical impact on the page."""
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("""() => axe.run(document, {
        runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']},
        resultTypes: ['violations']})""")
    return [v for v in result["violations"] if v["impact"] in SERIOUS]


def describe(violations: list[dict]) -> str:
    return "\n".join(f"{v['impact']}: {v['id']} ({v['help']}) at "
                     + "; ".join(" ".join(n["target"]) for n in v["nodes"][:5])
                     for v in violations)


def approved_dataset_id(served) -> int:
    with served.session() as session:
        return session.scalar(select(Dataset.id).where(
            Dataset.title_en == "Power grid dispatch Q&A"))


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_main_pages_have_no_serious_accessibility_violations(open_page, signed_in, served,
                                                             locale):
    dataset_id = approved_dataset_id(served)
    visitor = open_page(locale, bypass_csp=True)
    buyer = signed_in("buyer@demo.market", locale, bypass_csp=True)
    buyer.goto(f"/datasets/{dataset_id}")
    buyer.locator("form[action$='/cart'] button[type=submit]").first.click()
    pages = [(visitor, "/login"), (visitor, "/register"), (buyer, "/catalog"),
             (buyer, f"/datasets/{dataset_id}"), (buyer, "/cart"), (buyer, "/orders")]
    found = {}
    for page, path in pages:
        page.goto(path)
        violations = axe_violations(page)
        if violations:
            found[path] = describe(violations)
    assert not found, "\n".join(f"{path}:\n{text}" for path, text in found.items())
