"""End-to-end journeys in a real browser: Debian's Chromium driven by Playwright against the app
served on a loopback port (tests/e2e/conftest.py), card payments through localstripe's Stripe.js.

Each journey is one person's (or several people's) path through the storefront, asserted on
what the pages show; the database is only read to find ids a person would pick from a list.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import urllib.request
import uuid

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from billing.budgets import lines as budgets
from market.accounts import services as accounts
from market.accounts.mail import Outbox
from market.accounts.models import Organization
from market.catalog.models import Dataset, DatasetVersion
from pricing.money import Money
from tests.factories import PASSWORD, make_org, make_user

pytestmark = pytest.mark.usefixtures("demo")

SUPPLIER = "supplier@demo.market"
REVIEWER = "reviewer@demo.market"
EXCHANGE_OWNER = "exchange@demo.market"
PLATFORM = "platform@demo.market"
TREASURY = "treasury@demo.market"


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
    """The import form: choose a file, submit, watch the progress bar, and wait for the
    version's summary on the page it leads to."""
    form = page.locator("form[action$='/versions']")
    form.locator("input[type=file]").set_input_files(
        {"name": filename, "mimeType": "application/x-ndjson", "buffer": jsonl(records)})
    form.locator("input[name=notes]").fill(f"{len(records)} inspection notes")
    progress = page.locator("#upload-progress")
    expect(progress).to_be_hidden()
    with page.expect_response(lambda r: r.url.endswith("/versions")) as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.headers["content-type"].startswith("application/json")
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


def register(page, served, organization: str, email: str,
             password: str = "a-long-buyer-passphrase"):
    """The form, then the link mailed to the address (kept by the served app's outbox)."""
    outbox = Outbox()
    served.app.extensions["market.mailer"] = outbox
    page.goto("/register")
    page.locator("#name").fill("Gao Fei")
    page.locator("#email").fill(email)
    page.locator("#password").fill(password)
    page.locator("#organization_name").fill(organization)
    page.locator("input[name=roles][value=buyer]").check()
    page.locator("main form button[type=submit]").click()
    expect(page.locator("main [role=status]")).to_contain_text(email)
    (mail,) = outbox.sent
    page.goto(re.search(r"http://\S+/register/confirm/[\w-]+", mail.body).group(0))
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


def set_up_budget(page, name: str, line_code: str, approved: str) -> int:
    """The budgets page's set-up form, then one line on the new budget; returns its id."""
    page.goto("/budgets")
    form = page.locator("form[action$='/budgets']")
    form.locator("[name=fiscal_year]").fill(str(datetime.date.today().year))
    form.locator("[name=currency]").fill("CNY")
    form.locator("[name=name]").fill(name)
    form.locator("button[type=submit]").click()
    page.goto("/budgets")
    page.locator("table.budgets a", has_text=name).click()
    budget_id = int(re.search(r"/budgets/(\d+)", page.url).group(1))
    line = page.locator("form[action$='/lines']")
    line.locator("[name=code]").fill(line_code)
    line.locator("[name=name]").fill("Grid data subscriptions")
    line.locator("[name=category]").select_option("data_purchase")
    line.locator("[name=approved]").fill(approved)
    line.locator("button[type=submit]").click()
    expect(page.locator("table.budget-lines")).to_contain_text(line_code)
    return budget_id


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_buyer_registers_and_subscribes_paying_by_card(open_page, served, locale):
    zh = locale == "zh-CN"
    dataset_id = demo_dataset_id(served, "Power grid dispatch Q&A")
    title = "电网负荷调度问答" if zh else "Power grid dispatch Q&A"
    page = open_page(locale)
    register(page, served, f"Municipal Energy Bureau {locale}",
             f"energy-{uuid.uuid4().hex[:8]}@example.cn")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN" if zh else "en")
    budget_id = set_up_budget(page, "Energy bureau 2026", "GRID-SUB", "60000.00")

    # The dataset page's plan leads, since the buyer has a budget, to the confirmation page
    # where the line is chosen.
    page.goto(f"/datasets/{dataset_id}")
    expect(page.locator("h1")).to_contain_text(title)
    subscribe = page.locator("form[action$='/subscriptions']")
    subscribe.locator("select[name=payment_method]").select_option("card")
    subscribe.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/subscriptions/new\?"))
    confirm = page.locator("main form[action$='/subscriptions']")
    confirm.locator("input[name=payment_method][value=card]").check()
    line_option = confirm.locator("select[name=budget_line_id] option", has_text="GRID-SUB")
    confirm.locator("select[name=budget_line_id]").select_option(
        line_option.get_attribute("value"))
    confirm.locator("input[name=purchase_order_number]").fill("PO-ENERGY-7")
    confirm.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/orders/\d+$"))
    order_number = page.locator("h1 code").inner_text()
    total = page.locator("td.order-total").inner_text()

    pay_by_card(page)
    expect(page.locator("h1 code")).to_have_text(order_number)
    expect(page.locator("main p .badge.order-paid")).to_be_visible()
    expect(page.locator("main table").last.locator(".badge.payment-succeeded")).to_have_count(1)
    # The card payment, its status in the page's language.
    expect(page.locator("main table").last).to_contain_text("成功" if zh else "succeeded")

    page.goto("/holdings")
    expect(page.locator("table.entitlements tbody")).to_contain_text(title)
    page.goto("/subscriptions")
    expect(page.locator("main")).to_contain_text(title)

    # The first period is spent on the line chosen, and its record names the order.
    page.goto(f"/budgets/{budget_id}")
    line = page.locator("table.budget-lines tbody tr", has_text="GRID-SUB")
    expect(line.locator("td.num").nth(2)).to_have_text(total)
    page.locator("table.budget-lines a", has_text="GRID-SUB").click()
    expect(page.locator("main")).to_contain_text(order_number)


# 4. A model company's key, a metered call, and the usage chart ---------------------------------

def usage_tokens(page) -> int:
    data = json.loads(page.locator("#usage-data").text_content())
    return sum(data["tokens"])


def test_buyer_creates_a_key_calls_the_metered_api_and_sees_usage(signed_in, served):
    dataset_id = demo_dataset_id(served, "Radiology report summaries")
    page = signed_in("models@demo.market")
    page.goto("/usage")
    before = usage_tokens(page)

    page.goto("/account/keys")
    form = page.locator("main form.form")
    form.locator("#name").fill("training pipeline")
    form.locator("input[name=scopes][value='data:read']").check()
    form.locator("button[type=submit]").click()
    secret = page.locator("#new-key-secret").inner_text().strip()
    assert secret.startswith("dmk_test_")
    expect(page.locator("main table")).to_contain_text("training pipeline")

    request = urllib.request.Request(
        f"{served.url}/api/v1/datasets/{dataset_id}/versions/1/records?limit=20",
        headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
        charged = int(response.headers["X-Tokens-Charged"])
    assert len(body["records"]) == 20 and charged == body["usage"]["tokens"] > 0

    page.goto("/usage")
    assert usage_tokens(page) == before + charged
    expect(page.locator("table.usage-keys")).to_contain_text(secret[:12])
    # Chart.js drew on the canvas: it has a size and pixels that are not all transparent.
    canvas = page.locator("#usage-chart")
    expect(canvas).to_be_visible()
    drawn = canvas.evaluate("""c => {
        const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return c.width > 0 && c.height > 0 && pixels.some(v => v !== 0)
            && window.Chart.getChart(c) !== undefined; }""")
    assert drawn


# 5. A package paid by bank transfer, confirmed by platform finance, downloaded -----------------

def buyer_with_budget(served, approved: str = "50000.00") -> dict:
    """A buyer organization of its own (owner e-mail, PASSWORD) with this year's budget and one
    line, made through the real services and committed."""
    app = served.app
    with served.session() as session, session.begin():
        org = make_org(session, "buyer", name=f"Pudong Health Commission {uuid.uuid4().hex[:4]}")
        user = make_user(session, app.extensions["market.passwords"], org, "owner",
                         email=f"health-{uuid.uuid4().hex[:8]}@example.cn")
        owner = accounts.principal_for_user(user, org.id)
        budget = budgets.create_budget(session, owner, fiscal_year=datetime.date.today().year,
                                       currency="CNY", name="2026 data procurement")
        line = budgets.add_line(session, owner, budget, code="DATA-01", name="Training data",
                                category="data_purchase", approved=Money(approved, "CNY"))
        session.flush()  # the ids, for the pages
        return {"email": user.email, "budget_id": budget.id, "line_id": line.id}


def test_buyer_pays_a_package_by_bank_transfer_finance_confirms_and_the_download_matches(
        signed_in, served):
    dataset_id = demo_dataset_id(served, "Power grid dispatch Q&A")
    buyer = buyer_with_budget(served)
    page = signed_in(buyer["email"], password=PASSWORD)

    page.goto(f"/datasets/{dataset_id}")
    page.locator("form[action$='/cart'] button[type=submit]").first.click()
    page.goto("/cart")
    checkout = page.locator("form[action$='/cart/checkout']")
    checkout.locator("input[name=payment_method][value=bank_transfer]").check()
    checkout.locator("select[name=budget_line_id]").select_option(str(buyer["line_id"]))
    checkout.locator("input[name=purchase_order_number]").fill("PO-2026-0042")
    checkout.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/orders/\d+$"))
    total = page.locator("td.order-total").inner_text()
    order_number = page.locator("h1 code").inner_text()
    if page.locator("form[action$='/pay/bank-transfer']").count():
        page.locator("form[action$='/pay/bank-transfer'] button").click()
    reference = page.locator("code.payment-reference").inner_text()
    order_url = page.url

    finance = signed_in(TREASURY)
    finance.goto("/finance")
    finance.locator("input[name=payment_reference]").fill(reference)
    finance.locator("form.inline-form button[type=submit]").click()
    expect(finance.locator("p.found")).to_contain_text("outstanding")
    row = finance.locator("article.invoice-row", has_text=reference)
    amount = re.sub(r"[^0-9.]", "", total)
    row.locator("input[name$=amount]").fill(amount)
    row.locator("input[name$=currency]").fill("CNY")
    row.locator("input[name$=received_on]").fill(datetime.date.today().isoformat())
    row.locator("input[name$=bank_reference]").fill("ICBC-20261123-0001")
    row.locator("button[type=submit]").click()
    expect(flash(finance).first).to_be_visible()
    # Over the dual-control threshold the receipt waits for a second person: the platform's
    # owner confirms it, and only then is the invoice paid.
    checker = signed_in(PLATFORM)
    checker.goto("/finance")
    waiting = checker.locator("section.pending-receipts tr", has_text="ICBC-20261123-0001")
    waiting.locator("button", has_text="Confirm and post").click()
    expect(flash(checker).first).to_be_visible()
    expect(checker.locator("article.invoice-row", has_text=reference)).to_have_count(0)

    page.goto(order_url)
    expect(page.locator("main p .badge.order-paid")).to_be_visible()
    with page.expect_download() as event:
        page.locator("a.download").first.click()
    download = event.value
    content = download.path().read_bytes()
    with served.session() as session:
        expected = session.scalar(select(DatasetVersion.content_sha256).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.number == 1))
    assert hashlib.sha256(content).hexdigest() == expected
    assert content.count(b"\n") == 240

    # The purchase is spent on the budget line chosen at checkout.
    page.goto(f"/budgets/{buyer['budget_id']}")
    line = page.locator("table.budget-lines tbody tr", has_text="DATA-01")
    expect(line.locator("td.num").nth(2)).to_have_text(total)  # spent
    expect(line.locator("td.num").nth(1)).to_contain_text(re.compile(r"^\D*0\.00"))  # committed
    page.locator("table.budget-lines a", has_text="DATA-01").click()
    expect(page.locator("main")).to_contain_text("Expenditure")
    expect(page.locator("main")).to_contain_text(order_number)


# 6. Period close: the exchange approves a statement under maker-checker, and its PDF -----------
# Last in the module: closing the month ends the journeys' period for settlement.

def test_exchange_approves_a_statement_at_period_close_and_downloads_its_pdf(
        signed_in, served, monkeypatch):
    import billing.settlement.workflow
    from market.core.db import utcnow

    # The month closes once it has ended: run the statements' clock five weeks ahead, so this
    # month (which holds the demo's and the journeys' payments) can be closed now.
    monkeypatch.setattr(billing.settlement.workflow, "utcnow",
                        lambda: utcnow() + datetime.timedelta(days=35))
    period = utcnow().strftime("%Y-%m")

    platform = signed_in(PLATFORM)
    platform.goto("/statements")
    close = platform.locator("section.close-period form")
    close.locator("input[name=period]").fill(period)
    close.locator("button[type=submit]").click()
    expect(flash(platform)).to_contain_text(f"Period {period} closed")

    # The platform's person closed the month, so is its statements' maker: they issue this one
    # and submit it for approval, but may not approve it themselves.
    maker = platform
    maker.goto(f"/statements?period={period}")
    row = maker.locator("table.statements tbody tr", has_text="Grid Sensor Data Co.")
    row.locator("a").first.click()
    statement_url = maker.url
    expect(maker.locator("h1 .badge")).to_have_text("draft")
    maker.locator("button[value=issue]").click()
    expect(maker.locator("h1 .badge")).to_have_text("issued")
    maker.locator("button[value=review]").click()
    expect(maker.locator("h1 .badge")).to_have_text("under review")
    expect(maker.locator("button[value=approve]")).to_have_count(0)
    expect(maker.locator("section.statement-actions")).to_contain_text("maker-checker")

    # The listing exchange's reviewer finds it in the review queue and approves it.
    checker = signed_in(REVIEWER)
    checker.goto(f"/statements?period={period}")
    checker.locator("table.statements tbody tr", has_text="Grid Sensor Data Co.").locator(
        "a").first.click()
    assert checker.url == statement_url
    checker.locator("button[value=approve]").click()
    expect(checker.locator("h1 .badge")).to_have_text("approved")
    statement_hash = checker.locator("code.hash").inner_text()

    with checker.expect_download() as event:
        checker.locator("a", has_text="PDF").click()
    pdf = event.value.path().read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    assert event.value.suggested_filename.endswith(".pdf")
    assert len(statement_hash) == 64
