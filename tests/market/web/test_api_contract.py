"""The API keeps its contract under generated input: schemathesis over every operation.

Every operation of ``/api/v1/openapi.json`` is called with cases schemathesis generates from the
document itself, valid ones and invalid ones (wrong types, out-of-range values, missing fields,
strings no database stores), by three organizations' keys on the demo market: a model company,
a supplier and the platform. Each answer must pass the four checks a new integrator would run:
no server error, a documented status code, a body matching the documented schema, and a
documented content type. Failures are collected over the whole run and reported together, each
with the curl command that reproduces it.

The run is bounded and deterministic: ``CONTRACT_EXAMPLES`` cases per operation, mode and key
(default 4) from the seed ``CONTRACT_SEED``. To look harder, run it longer, e.g.
``CONTRACT_EXAMPLES=200 CONTRACT_SEED=7 .venv/bin/python -m pytest tests/market/web/test_api_contract.py``
(README, "The API contract").
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)
from sqlalchemy import select, text

from market.accounts.models import Organization
from tests.factories import make_key

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance,
          content_type_conformance]
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "4"))
SEED = int(os.environ.get("CONTRACT_SEED", "20261202"))
CALLERS = ("demo-model-co", "demo-supplier", "demo-platform")
# The table each path id names: a second pass calls every operation on the demo market's own
# objects, so generated bodies and queries reach the services rather than stopping at a 404.
ID_TABLES = {
    "adjustment_id": "statement_adjustments", "budget_id": "budgets",
    "budget_line_id": "budget_lines", "line_id": "budget_lines",
    "change_id": "credit_line_changes", "credit_line_id": "credit_lines",
    "dataset_id": "datasets", "deal_id": "deals", "demand_id": "demands",
    "invitation_id": "invitations", "invoice_id": "invoices", "key_id": "api_keys",
    "listing_id": "listings", "offer_id": "offers", "order_id": "orders",
    "organization_id": "organizations", "payment_id": "payments", "quote_id": "deal_quotes",
    "receipt_id": "bank_receipts", "refund_id": "refunds",
    "statement_id": "settlement_statements", "subscription_id": "subscriptions",
    "upload_id": "uploads", "version_id": "dataset_versions",
}


@pytest.fixture()
def demo_market(runner, session):
    result = runner.invoke(args=["market", "seed-demo"])
    assert result.exit_code == 0, result.output
    return {org.slug: org for org in session.scalars(
        select(Organization).where(Organization.slug.in_(CALLERS)))}


def _fresh_keys(session, organizations) -> dict[str, str]:
    """A key per caller, made anew for each operation: a generated call may revoke one."""
    keys = {slug: make_key(session, org)[1] for slug, org in organizations.items()}
    session.commit()
    return keys


def _known_ids(session) -> dict[str, int]:
    ids = {name: session.scalar(text(f"SELECT min(id) FROM {table}"))
           for name, table in ID_TABLES.items()}
    ids["number"] = 1
    return {name: value for name, value in ids.items() if value is not None}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _exercise(operation, mode: GenerationMode, caller: str, secret: str,
              failures: dict[tuple[str, str], str], answered: set[str],
              path_parameters: dict[str, int] | None = None) -> int:
    """Call ``operation`` with the generated cases of ``mode`` as ``caller``; the calls made.
    ``answered`` collects the operations that answered a success at least once."""
    headers = {"Authorization": f"Bearer {secret}"}
    calls = 0

    @seed(SEED)
    @settings(max_examples=EXAMPLES, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def call(case):
        nonlocal calls
        calls += 1
        response = case.call(headers=headers)
        if response.status_code < 300:
            answered.add(operation.label)
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except (Exception, FailureGroup) as exc:  # one report per operation and cause
            failures.setdefault((operation.label, _first_line(exc)),
                                f"[{caller}, {mode.value}]\n{exc}")

    call()
    return calls


def test_every_operation_keeps_the_contract(app, session, demo_market):
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    failures: dict[tuple[str, str], str] = {}
    answered: set[str] = set()
    calls = operations = 0
    known = _known_ids(session)
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        keys = _fresh_keys(session, demo_market)
        names = [p.name for p in operation.path_parameters]
        passes = [None]
        if names and all(name in known for name in names):
            passes.append({name: known[name] for name in names})
        for path_parameters in passes:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                for caller, secret in keys.items():
                    calls += _exercise(operation, mode, caller, secret, failures, answered,
                                       path_parameters)
    # every operation but the document itself, which schemathesis leaves out
    assert operations == len(app.blueprints["api"].operations) - 1
    print(f"{calls} calls; {len(answered)} of {operations} operations answered a success")
    report = "\n\n".join(f"== {label}: {cause}\n{detail}"
                         for (label, cause), detail in failures.items())
    assert not failures, f"{len(failures)} contract failures in {calls} calls:\n\n{report}"
