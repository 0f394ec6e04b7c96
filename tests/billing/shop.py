"""The actors of the buying tests: a listed dataset with a supply chain and offers, buyers, and
the platform's finance staff, built through the real services. The fixtures of
``tests/billing/conftest.py`` are these, committed."""

from __future__ import annotations

import io
import json
from typing import NamedTuple

from market.accounts import services as accounts
from market.accounts.authz import Principal
from market.accounts.models import Organization, User
from market.catalog import importer, listings, offers
from market.catalog import services as catalog
from tests.factories import make_org, make_user

RECORDS = [
    {"instruction": "总结这份CT报告。", "response": "双肺未见明显异常。"},
    {"instruction": "Summarize the MRI report.", "response": "No acute findings."},
    {"instruction": "这份报告提示什么？", "response": "右肺上叶结节，建议随访。"},
]

DATASET = {
    "title_zh": "电网负荷数据", "title_en": "Grid load series", "sector": "smart_energy",
    "modality": "text", "ai_stage": "pretraining", "licence": "commercial_standard",
    "personal_information": "none",
    "rights": {"holding": "Grid Co", "usage": "Grid Co", "operation": "Grid Co"}}


class Member(NamedTuple):
    """A person of an organization, and the principal they act as."""

    org: Organization
    user: User
    principal: Principal


def principal_of(user, org) -> Principal:
    return accounts.principal_for_user(user, org.id)


def listed_dataset(session, passwords, *, records=RECORDS, package_price="9800.00",
                   package_tokens=0, licence_months=None,
                   shares=((6_000, "supplier"), (4_000, "processor")), extra_offers=()):
    """A supplier's dataset with one version of ``records``, a supply chain of supplier and
    processor, a mall package (none when ``package_price`` is None), the ``extra_offers``, and
    an approved listing at an exchange. Returns a dict of what it made."""
    supplier = make_org(session, "supplier", name="Grid Data Co")
    processor = make_org(session, "processor", name="Label Works")
    exchange = make_org(session, "exchange", name="Shanghai Data Exchange")
    owner = principal_of(make_user(session, passwords, supplier, "owner"), supplier)
    reviewer = principal_of(make_user(session, passwords, exchange, "reviewer"), exchange)
    dataset = catalog.create_dataset(session, owner, DATASET)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    importer.import_version(session, owner, dataset, io.BytesIO(body), source_format="jsonl",
                            encoding="o200k_base")
    orgs = {"supplier": supplier, "processor": processor}
    chain = catalog.set_supply_chain(session, owner, dataset, [
        {"organization_id": orgs[role].id, "role": role, "share_bps": bps}
        for bps, role in shares])
    package = None
    if package_price is not None:
        package = offers.add_offer(session, owner, dataset, {
            "kind": "mall_package", "code": "pack",
            "price": {"amount": package_price, "currency": "CNY"},
            "api_tokens": package_tokens, "licence_months": licence_months})
    more = [offers.add_offer(session, owner, dataset, t) for t in extra_offers]
    listing = listings.submit(session, owner, dataset, version_id=dataset.versions[0].id,
                              exchange_id=exchange.id, review_days=5)
    listings.approve(session, reviewer, listing)
    session.flush()
    return {"dataset": dataset, "package": package, "offers": more, "chain": chain,
            "supplier": supplier,
            "processor": processor, "exchange": exchange, "listing": listing, "owner": owner,
            "version": dataset.versions[0]}


def platform_finance(session, passwords) -> Member:
    """A finance person of the platform organization."""
    platform = make_org(session, "platform", name="Marketplace Platform")
    user = make_user(session, passwords, platform, "finance")
    return Member(platform, user, principal_of(user, platform))


def buyer(session, passwords, role="owner") -> Member:
    """A buyer organization and one of its people (its owner unless ``role`` says)."""
    org = make_org(session, "buyer", name="City Health Commission")
    user = make_user(session, passwords, org, role)
    return Member(org, user, principal_of(user, org))
