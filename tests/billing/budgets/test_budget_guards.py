"""The budget guard on metered calls is wired by the metering itself: a fresh interpreter that
imports only ``billing.metering.charge`` refuses a postpaid call over a "block" API line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from billing.budgets import lines as budgets
from billing.models import CreditLine
from market.core.db import business_calendar, utcnow
from pricing.money import Money
from tests.billing import shop as shopping
from tests.concurrency import fresh_app
from tests.factories import make_key

METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None,
     "price_per_million": {"amount": "300000", "currency": "CNY"}}]}

# Run in a new interpreter: nothing but the metering (and what it imports itself) is loaded.
CALL = """
import json, sys
from billing.errors import PaymentRequired
from billing.metering.charge import charge_call
from market.accounts.models import ApiKey
from market.catalog.models import Dataset
from market.core.db import Database

url, key_id, dataset_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
loaded = sorted(name for name in sys.modules if name.startswith(("billing", "market.web")))
with Database(url).session() as session:
    dataset = session.get(Dataset, dataset_id)
    try:
        charge_call(session, key=session.get(ApiKey, key_id), dataset=dataset,
                    version=dataset.versions[0], tokens=10_000, request_id="fresh-call",
                    request_hash="0" * 64)
    except PaymentRequired as refusal:
        print(json.dumps({"refused": refusal.code, "detail": refusal.detail, "loaded": loaded}))
    else:
        print(json.dumps({"refused": None, "loaded": loaded}))
"""


def test_a_fresh_interpreter_that_imports_only_the_metering_keeps_budget_limits(
        database_url, tmp_path):
    with fresh_app(database_url, tmp_path) as app:
        database = app.extensions["market.db"]
        with database.session() as session, session.begin():
            passwords = app.extensions["market.passwords"]
            shop = shopping.listed_dataset(session, passwords, extra_offers=[METERED])
            org, _, principal = shopping.buyer(session, passwords)
            year = business_calendar(session).year_of(utcnow())
            budget = budgets.create_budget(session, principal, fiscal_year=year,
                                           currency="CNY", name="Model services")
            budgets.add_line(session, principal, budget, code=f"{year}-API-01",
                             name="LLM data API", category="model_services",
                             approved=Money("0.01", "CNY"), default_for_api=True)
            session.add(CreditLine(organization_id=org.id, currency="CNY",
                                   limit_minor=10_000_000))
            key, _ = make_key(session, org, scopes=("data:read",))
            ids = (str(key.id), str(shop["dataset"].id))
        url = database.engine.url.render_as_string(hide_password=False)

        ran = subprocess.run([sys.executable, "-c", CALL, url, *ids], capture_output=True,
                             text=True, cwd=Path(__file__).parents[3], timeout=120)

    assert ran.returncode == 0, ran.stderr
    outcome = json.loads(ran.stdout)
    assert outcome["refused"] == "budget_line_exhausted", outcome
    assert f"{year}-API-01" in outcome["detail"]
    assert not any(name.startswith("market.web") for name in outcome["loaded"])
    assert "billing.budgets.guards" in outcome["loaded"]
