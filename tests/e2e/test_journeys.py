"""End-to-end journeys in a real browser: Debian's Chromium driven by Playwright against the app
served on a loopback port (tests/e2e/conftest.py), card payments through localstripe's Stripe.js.

Each journey is one person's (or several people's) path through the storefront, asserted on
what the pages show; the database is only read to find ids a person would pick from a list.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from market.accounts.models import Organization
from market.catalog.models import Dataset

pytestmark = pytest.mark.usefixtures("demo")

SUPPLIER = "supplier@demo.market"
REVIEWER = "reviewer@demo.market"
EXCHANGE_OWNER = "exchange@demo.market"
PLATFORM = "platform@demo.market"


def org_ids(served) -> dict[str, int]:
    with served.session() as session:
        return {o.slug: o.id for o in session.scalars(select(Organization))}


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def flash(page):
    return page.locator("main .flash")


def supplier_creates_dataset(page, title_en: str, title_zh: str) -> int:
    """The supplier fills the new-dataset form; returns the new dataset's id."""
    page.goto("/supplier/datasets")
    page.locator("main a.button[href$='/supplier/datasets/new']").click()
    page.locator("#title_zh").fill(title_zh)
    page.locator("#title_en").fill(title_en)
    page.locator("#summary_en").fill("Substation inspection notes for maintenance models")
    page.locator("#sector").select_option("smart_energy")
    page.locator("input[name=languages][value=zh]").check()
    page.locator("input[name=languages][value=en]").check()
    page.locator("#rights_holding").fill("Grid Sensor Data Co.")
    page.locator("#rights_usage").fill("Grid Sensor Data Co.")
    page.locator("#rights_operation").fill("Demo Data Exchange")
    page.locator("main form button[type=submit]").click()
    expect(page.locator("h1")).to_have_text(title_en)
    return int(re.search(r"/supplier/datasets/(\d+)", page.url).group(1))


def upload_version(page, records: list[dict], filename: str) -> None:
    """The import form: choose a file, submit, and wait for the version's summary."""
    form = page.locator("form[action$='/versions']")
    form.locator("input[type=file]").set_input_files(
        {"name": filename, "mimeType": "application/x-ndjson", "buffer": jsonl(records)})
    form.locator("input[name=notes]").fill(f"{len(records)} inspection notes")
    form.locator("button[type=submit]").click()
    expect(flash(page)).to_contain_text(f"{len(records)} records")


def set_supply_chain(page, shares: list[tuple[int, str, str]]) -> None:
    form = page.locator("form[action$='/supply-chain']")
    for row, (org_id, role, percent) in enumerate(shares):
        form.locator(f"[name='rows-{row}-organization_id']").fill(str(org_id))
        form.locator(f"[name='rows-{row}-role']").select_option(role)
        form.locator(f"[name='rows-{row}-share_percent']").fill(percent)
    form.locator("[name=note]").fill("first revision")
    form.locator("button[type=submit]").click()
    expect(flash(page)).to_have_text("Supply chain saved as a new revision.")


def add_package_offer(page, code: str, price: str) -> None:
    form = page.locator("form[action$='/offers']")
    form.locator("[name=kind]").select_option("mall_package")
    form.locator("[name=code]").fill(code)
    form.locator("[name=price]").fill(price)
    form.locator("button[type=submit]").click()
    expect(flash(page)).to_have_text("Offer added.")


def submit_for_listing(page, exchange_id: int, version: int) -> None:
    form = page.locator("form[action$='/listing']")
    form.locator("[name=version]").select_option(str(version))
    form.locator("[name=exchange_id]").select_option(str(exchange_id))
    form.locator("button[type=submit]").click()
    expect(flash(page)).to_have_text("Submitted for review.")


RECORDS = [{"instruction": f"第{i}号变电站巡检记录：主变油温{60 + i}摄氏度，请判断是否异常。",
            "response": "Oil temperature normal; keep monitoring." if i % 2 else "油温偏高，建议检修。",
            "label": "normal" if i % 2 else "abnormal"} for i in range(12)]


def test_supplier_uploads_a_version_sets_chain_and_offer_and_submits(signed_in, served):
    orgs = org_ids(served)
    page = signed_in(SUPPLIER)
    title = f"Substation inspections {uuid.uuid4().hex[:6]}"
    supplier_creates_dataset(page, title, "变电站巡检记录")

    upload_version(page, RECORDS, "inspections.jsonl")
    version = page.locator("main details[open] summary")
    expect(version).to_contain_text("v1")
    expect(page.locator("main details[open]")).to_contain_text("12")

    set_supply_chain(page, [(orgs["demo-supplier"], "supplier", "70"),
                            (orgs["demo-processor"], "processor", "20"),
                            (orgs["demo-exchange"], "exchange", "10")])
    expect(page.locator("main")).to_contain_text("In force: revision 1")
    add_package_offer(page, "inspections-pack", "4800.00")
    expect(page.locator("table.offers")).to_contain_text("inspections-pack")

    submit_for_listing(page, orgs["demo-exchange"], 1)
    expect(page.locator("main .badge.status-submitted").first).to_have_text("under review")

    # The exchange sees it waiting in its queue.
    reviewer = signed_in(REVIEWER)
    reviewer.goto("/exchange/listings")
    expect(reviewer.locator("main table").first).to_contain_text(title)


def test_reviewer_rejects_supplier_resubmits_reviewer_approves(signed_in, served):
    orgs = org_ids(served)
    supplier = signed_in(SUPPLIER)
    title = f"Transformer faults {uuid.uuid4().hex[:6]}"
    dataset_id = supplier_creates_dataset(supplier, title, "变压器故障记录")
    upload_version(supplier, RECORDS[:6], "faults.jsonl")
    set_supply_chain(supplier, [(orgs["demo-supplier"], "supplier", "100")])
    add_package_offer(supplier, "faults-pack", "1200.00")
    submit_for_listing(supplier, orgs["demo-exchange"], 1)

    reviewer = signed_in(REVIEWER)
    reviewer.goto("/exchange/listings")
    reviewer.get_by_role("link", name=title).click()
    reject = reviewer.locator("form[action$='/reject']")
    reject.locator("input[name=reasons][value=quality_below_threshold]").check()
    reject.locator("textarea[name=text]").fill("Only six records; add the full month.")
    reject.locator("button[type=submit]").click()
    expect(flash(reviewer)).to_contain_text("rejected")

    supplier.goto(f"/supplier/datasets/{dataset_id}")
    expect(supplier.locator("ol.history")).to_contain_text("Quality below threshold")
    expect(supplier.locator("ol.history")).to_contain_text("Only six records; add the full month.")
    upload_version(supplier, RECORDS, "faults-full-month.jsonl")
    resubmit = supplier.locator("form[action$='/listing']")
    expect(resubmit.locator("button[type=submit]")).to_have_text("Resubmit for review")
    submit_for_listing(supplier, orgs["demo-exchange"], 2)

    reviewer.goto("/exchange/listings")
    reviewer.get_by_role("link", name=title).click()
    expect(reviewer.locator("h1")).to_contain_text("v2")
    approve = reviewer.locator("form[action$='/approve']")
    approve.locator("textarea[name=text]").fill("Full month received.")
    approve.locator("button[type=submit]").click()
    expect(flash(reviewer)).to_contain_text("approved")

    # Listed: the catalogue shows it to anyone.
    visitor = signed_in("buyer@demo.market")
    visitor.goto(f"/datasets/{dataset_id}")
    expect(visitor.locator("h1")).to_contain_text(title)
    expect(visitor.locator("table.offers")).to_contain_text("faults-pack")


# 3. A buyer registers and subscribes, paying by card -----------------------------------------

def demo_dataset_id(served, title_en: str) -> int:
    with served.session() as session:
        return session.scalar(select(Dataset.id).where(Dataset.title_en == title_en))


def register(page, organization: str, email: str, password: str = "a-long-buyer-passphrase"):
    page.goto("/register")
    page.locator("#name").fill("Gao Fei")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.locator("#organization_name").fill(organization)
    page.locator("input[name=roles][value=buyer]").check()
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/account$"))


def pay_by_card(page, number: str = "4242424242424242") -> None:
    """On an order page: open the card page and pay with localstripe's card field."""
    page.locator("main a.button[href$='/pay/card']").click()
    card = page.locator("#card-element")
    expect(card.locator("input[placeholder=number]")).to_be_visible()
    card.locator("input[placeholder=number]").fill(number)
    card.locator("input[placeholder=exp_month]").fill("12")
    card.locator("input[placeholder=exp_year]").fill("34")
    card.locator("input[placeholder=cvc]").fill("123")
    card.locator("input[placeholder=postal_code]").fill("200000")
    submit = page.locator("#card-submit")
    expect(submit).to_be_enabled()
    submit.click()
    expect(page).to_have_url(re.compile(r"/orders/\d+$"), timeout=15_000)


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_buyer_registers_and_subscribes_paying_by_card(open_page, served, locale):
    dataset_id = demo_dataset_id(served, "Power grid dispatch Q&A")
    page = open_page(locale)
    register(page, f"Municipal Energy Bureau {locale}", f"energy-{uuid.uuid4().hex[:8]}@example.cn")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN" if locale == "zh-CN" else "en")

    page.goto(f"/datasets/{dataset_id}")
    expect(page.locator("h1")).to_contain_text(
        "电网负荷调度问答" if locale == "zh-CN" else "Power grid dispatch Q&A")
    subscribe = page.locator("form[action$='/subscriptions']")
    subscribe.locator("select[name=payment_method]").select_option("card")
    subscribe.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/orders/\d+$"))
    order_number = page.locator("h1 code").inner_text()

    pay_by_card(page)
    expect(page.locator("h1 code")).to_have_text(order_number)
    expect(page.locator("main p .badge.order-paid")).to_be_visible()
    expect(page.locator("main table").last).to_contain_text("succeeded")  # the card payment

    page.goto("/holdings")
    rights = page.locator("table.entitlements tbody")
    expect(rights).to_contain_text("电网负荷调度问答" if locale == "zh-CN" else "Power grid dispatch Q&A")
    page.goto("/subscriptions")
    expect(page.locator("main")).to_contain_text(
        "电网负荷调度问答" if locale == "zh-CN" else "Power grid dispatch Q&A")
