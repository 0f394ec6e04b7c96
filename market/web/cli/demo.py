"""Demo data for a first look at the marketplace; running it twice changes nothing."""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing import invoices, orders, subscriptions
from billing.metering import postpaid
from billing.models import Order
from billing.payments import bank_transfer
from market.accounts import services as accounts
from market.accounts.models import Membership, Organization, User
from market.accounts.passwords import Passwords
from market.catalog import importer, listings, offers
from market.catalog import services as catalog
from market.catalog.models import Dataset
from pricing.money import Money

DEMO_PASSWORD = "demo-market-2026"


@dataclass(frozen=True)
class DemoOrg:
    slug: str
    name: str
    roles: tuple[str, ...]
    people: tuple[tuple[str, str, str], ...]  # (e-mail, name, member role)


DEMO_ORGS = (
    DemoOrg("demo-buyer", "华东能源集团 East China Energy Group", ("buyer",), (
        ("buyer@demo.market", "Li Na", "owner"),
        ("finance@demo.market", "Zhou Min", "finance"))),
    DemoOrg("demo-model-co", "Lingxi Models", ("buyer",), (
        ("models@demo.market", "Chen Yu", "owner"),)),
    DemoOrg("demo-supplier", "Grid Sensor Data Co.", ("supplier",), (
        ("supplier@demo.market", "Wang Lei", "owner"),)),
    DemoOrg("demo-processor", "Precise Annotation Studio", ("processor",), (
        ("processor@demo.market", "Zhao Qing", "owner"),)),
    DemoOrg("demo-exchange", "Demo Data Exchange", ("exchange",), (
        ("exchange@demo.market", "Sun Hao", "owner"),
        ("reviewer@demo.market", "Xu Jing", "reviewer"))),
    DemoOrg("demo-channel", "Channel Partners Ltd.", ("channel",), (
        ("channel@demo.market", "He Fang", "owner"),)),
    DemoOrg("demo-platform", "Marketplace Platform", ("platform",), (
        ("platform@demo.market", "Operator", "owner"),
        # Records bank receipts; the owner confirms those from the dual-control threshold.
        ("treasury@demo.market", "Qian Hui", "finance"))),
)


@dataclass(frozen=True)
class DemoCredential:
    email: str
    password: str
    organization: str
    roles: tuple[str, ...]
    member_role: str


def seed_demo(session: Session, passwords: Passwords) -> list[DemoCredential]:
    """Get or create every demo organization and person; existing ones are left as they are."""
    credentials = []
    for spec in DEMO_ORGS:
        org = session.scalar(select(Organization).where(Organization.slug == spec.slug))
        if org is None:
            org = accounts.create_organization(session, name=spec.name, roles=spec.roles,
                                               slug=spec.slug)
        for email, name, role in spec.people:
            user = session.scalar(select(User).where(User.email == email))
            if user is None:
                user = User(email=email, name=name, password_hash=passwords.hash(DEMO_PASSWORD))
                session.add(user)
            if not any(m.organization is org for m in user.memberships):
                user.memberships.append(Membership(organization=org, role=role))
            credentials.append(DemoCredential(email, DEMO_PASSWORD, spec.name, spec.roles, role))
    return credentials


# Catalogue -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DemoDataset:
    title_zh: str
    title_en: str
    summary_zh: str
    summary_en: str
    sector: str
    modality: str
    ai_stage: str
    licence: str
    status: str  # the listing state the demo leaves it in
    make_record: Callable[[random.Random, int], dict]
    records: int = 240


def _grid_qa(rng: random.Random, i: int) -> dict:
    station = rng.choice(["华东", "华北", "南方", "西北"])
    load = rng.randint(800, 4200)
    return {"instruction": f"{station}电网第{i}号变电站今日峰值负荷为{load}兆瓦，请给出调度建议。",
            "response": rng.choice([
                "建议提前启动备用机组，并在晚高峰前完成需求响应邀约。",
                "Load is within limits; keep spinning reserve at 8% and monitor feeder 3.",
                "负荷接近上限，建议转移部分工业负荷至夜间低谷时段。"]),
            "label": "dispatch"}


def _radiology(rng: random.Random, i: int) -> dict:
    finding = rng.choice(["双肺纹理清晰，未见实质性病变", "右肺上叶见小结节，直径约6毫米",
                          "No acute intracranial abnormality", "Mild degenerative change at L4-L5"])
    return {"instruction": "请用一句话总结以下影像报告。 Summarize the report.",
            "input": f"检查编号 {100000 + i}：{finding}。",
            "response": finding, "label": "abnormal" if "结节" in finding or "Mild" in finding
            else "normal"}


def _driving(rng: random.Random, i: int) -> dict:
    return {"scene_id": f"SH-{i:05d}", "text": rng.choice([
        "雨天夜间城市道路，前方路口有行人横穿，自车减速至15公里每小时。",
        "Highway merge at dusk; a truck occupies the right lane and the ego car yields.",
        "施工路段占用一条车道，锥桶引导车辆向左并线。"]), "weather": rng.choice(["rain", "clear",
                                                                             "fog"])}


def _pests(rng: random.Random, i: int) -> dict:
    pest = rng.choice(["稻飞虱", "玉米螟", "小麦条锈病", "Fall armyworm"])
    return {"id": f"PEST-{i}", "title": pest,
            "content": f"{pest}的识别要点、发生规律与绿色防控措施（第{i}条）。"}


def _credit(rng: random.Random, i: int) -> dict:
    return {"question": f"企业{i}资产负债率{rng.randint(30, 95)}%，经营现金流为负，是否建议授信？",
            "answer": rng.choice(["谨慎授信", "不建议授信", "可授信"]),
            "label": rng.choice(["low", "medium", "high"])}


def _tickets(rng: random.Random, i: int) -> dict:
    return {"text": rng.choice(["小区路灯损坏，夜间出行不便。", "Illegal parking blocks a fire lane.",
                                "河道漂浮垃圾需要清理。"]), "district": rng.choice(["浦东", "徐汇"])}


def _drone_routes(rng: random.Random, i: int) -> dict:
    return {"route": f"R{i}", "text": f"无人机物流航线{i}：起降点海拔{rng.randint(5, 80)}米，"
                                      f"航程{rng.randint(3, 30)}公里。"}


DEMO_DATASETS = (
    DemoDataset("电网负荷调度问答", "Power grid dispatch Q&A", "调度员问答对，覆盖四大区域电网",
                "Dispatcher question-answer pairs from four regional grids", "smart_energy",
                "text", "instruction_tuning", "commercial_standard", "approved", _grid_qa),
    DemoDataset("医疗影像报告摘要", "Radiology report summaries", "脱敏CT/MRI报告与摘要",
                "De-identified CT and MRI reports with summaries", "healthcare", "text",
                "instruction_tuning", "commercial_no_redistribution", "approved", _radiology),
    DemoDataset("智能驾驶场景描述", "Driving scene descriptions", "城市与高速场景的文字描述",
                "Text descriptions of urban and highway scenes", "intelligent_driving", "text",
                "pretraining", "commercial_standard", "submitted", _driving),
    DemoDataset("农业病虫害知识库", "Crop pest knowledge base", "病虫害识别与防控知识条目",
                "Pest identification and control entries", "agriculture_rural",
                "knowledge_graph", "knowledge_base", "research_only", "rejected", _pests),
    DemoDataset("企业信贷风控评测集", "Corporate credit-risk evaluation set", "授信决策评测题",
                "Credit decision evaluation questions", "financial_services", "text",
                "evaluation", "commercial_standard", "suspended", _credit),
    DemoDataset("城市治理工单语料", "Urban governance tickets", "12345热线工单文本",
                "Citizen hotline tickets", "urban_governance", "text", "pretraining",
                "cc_by_nc_4_0", "draft", _tickets),
    DemoDataset("低空物流航线数据", "Low-altitude logistics routes", "无人机物流航线描述",
                "Drone logistics route descriptions", "low_altitude_economy",
                "time_series", "pretraining", "commercial_standard", "delisted", _drone_routes),
)


def seed_demo_catalog(session: Session, encoding: str) -> list[str]:
    """Demo datasets with imported versions, supply chains and listings in every review state."""
    orgs = {o.slug: o for o in session.scalars(select(Organization))}
    people = {u.email: u for u in session.scalars(select(User))}
    supplier = accounts.principal_for_user(people["supplier@demo.market"],
                                           orgs["demo-supplier"].id)
    reviewer = accounts.principal_for_user(people["reviewer@demo.market"],
                                           orgs["demo-exchange"].id)
    created = []
    for index, spec in enumerate(DEMO_DATASETS):
        exists = session.scalar(select(Dataset.id).where(
            Dataset.organization_id == supplier.organization_id,
            Dataset.title_en == spec.title_en))
        if exists is not None:
            continue
        dataset = catalog.create_dataset(session, supplier, {
            "title_zh": spec.title_zh, "title_en": spec.title_en, "summary_zh": spec.summary_zh,
            "summary_en": spec.summary_en, "description_zh": spec.summary_zh,
            "description_en": spec.summary_en, "sector": spec.sector,
            "modality": spec.modality, "ai_stage": spec.ai_stage, "languages": ["zh", "en"],
            "licence": spec.licence, "personal_information": "deidentified",
            "sensitivity": "general", "rights": {
                "holding": "Grid Sensor Data Co.", "usage": "Grid Sensor Data Co.",
                "operation": "Demo Data Exchange"},
            "label_field": "label" if spec.make_record in (_grid_qa, _radiology, _credit)
            else None})
        rng = random.Random(index)
        body = "".join(json.dumps(spec.make_record(rng, i), ensure_ascii=False) + "\n"
                       for i in range(spec.records)).encode("utf-8")
        version = importer.import_version(session, supplier, dataset, io.BytesIO(body),
                                          source_format="jsonl", encoding=encoding,
                                          filename=f"{spec.title_en.lower().replace(' ', '-')}"
                                                   ".jsonl")
        catalog.set_supply_chain(session, supplier, dataset, [
            {"organization_id": orgs["demo-supplier"].id, "role": "supplier", "share_bps": 6_000},
            {"organization_id": orgs["demo-processor"].id, "role": "processor",
             "share_bps": 2_500},
            {"organization_id": orgs["demo-exchange"].id, "role": "exchange", "share_bps": 1_000},
            {"organization_id": orgs["demo-channel"].id, "role": "channel", "share_bps": 500}],
            note="demo")
        scale = index + 1
        for terms in (
            {"kind": "subscription", "code": "monthly", "period": "month",
             "price": {"amount": f"{1500 * scale}.00", "currency": "CNY"},
             "included_tokens": 5_000_000, "overage_per_million": {"amount": "20",
                                                                   "currency": "CNY"}},
            {"kind": "mall_package", "code": "perpetual-download",
             "price": {"amount": f"{9800 * scale}.00", "currency": "CNY"},
             "licence_months": None, "download": True, "api_tokens": 0},
            {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
                {"from_tokens": 0, "up_to": 10_000_000,
                 "price_per_million": {"amount": "30", "currency": "CNY"}},
                {"from_tokens": 10_000_000, "up_to": None,
                 "price_per_million": {"amount": "20", "currency": "CNY"}}]},
        ):
            offers.add_offer(session, supplier, dataset, terms)
        if spec.status != "draft":
            listing = listings.submit(session, supplier, dataset, version_id=version.id,
                                      exchange_id=orgs["demo-exchange"].id, review_days=5)
            if spec.status == "rejected":
                listings.reject(session, reviewer, listing, reasons=["rights_unproven"],
                                text="请补充数据来源授权书。Please upload the source authorization.")
            elif spec.status in ("approved", "suspended", "delisted"):
                listings.approve(session, reviewer, listing, note="Checked.")
                if spec.status == "suspended":
                    listings.suspend(session, reviewer, listing, text="Complaint under review.")
                elif spec.status == "delisted":
                    listings.delist(session, reviewer, listing, text="Supplier request.")
        created.append(spec.title_en)
    return created


# Purchases -------------------------------------------------------------------------------------

def seed_demo_purchases(session: Session, settings) -> list[str]:
    """Demo buying: a package paid by bank transfer (download and certificate), a subscription
    paid for its first month, an order whose invoice awaits the money (for the finance console),
    a platform token pack, and a postpaid credit line. Skipped once the demo buyer has orders."""
    orgs = {o.slug: o for o in session.scalars(select(Organization))}
    people = {u.email: u for u in session.scalars(select(User))}
    buyer_org, model_co = orgs["demo-buyer"], orgs["demo-model-co"]
    if session.scalar(select(Order.id).where(Order.organization_id == buyer_org.id).limit(1)):
        return []
    buyer = accounts.principal_for_user(people["buyer@demo.market"], buyer_org.id)
    models = accounts.principal_for_user(people["models@demo.market"], model_co.id)
    finance = accounts.principal_for_user(people["platform@demo.market"],
                                          orgs["demo-platform"].id)
    listed = [d for d in session.scalars(select(Dataset).order_by(Dataset.id))
              if d.listing is not None and d.listing.status == "approved"]
    if len(listed) < 2:
        return []

    def offer(dataset: Dataset, kind: str):
        return next(o for o in dataset.active_offers if o.kind == kind)

    def pay_by_transfer(order, reference: str) -> None:
        invoice = invoices.issue_invoice(session, order, settings, buyer.actor)
        bank_transfer.record_bank_receipt(session, finance, invoice, amount=order.total,
                                          received_on=invoice.issued_at.date(),
                                          bank_reference=reference, settings=settings)

    done = []
    package = orders.place_mall_order(session, buyer, [orders.CartItem(
        offer(listed[0], "mall_package").id)], payment_method="bank_transfer",
        note="2026 年度数据采购")
    pay_by_transfer(package, f"DEMO-ICBC-{package.id:06d}")
    done.append(f"order {package.number}: {listed[0].title_en}, paid by bank transfer")

    sub = subscriptions.subscribe(session, buyer, offer(listed[1], "subscription").id,
                                  payment_method="bank_transfer", settings=settings)
    first = subscriptions.first_order(session, sub)
    pay_by_transfer(first, f"DEMO-ICBC-{first.id:06d}")
    done.append(f"subscription to {listed[1].title_en}, first month paid")

    waiting = orders.place_mall_order(session, buyer, [orders.CartItem(
        offer(listed[-1], "mall_package").id)], payment_method="bank_transfer")
    invoice = invoices.issue_invoice(session, waiting, settings, buyer.actor)
    done.append(f"order {waiting.number}: invoice {invoice.number} awaits "
                f"{waiting.total} (reference {invoice.payment_reference})")

    if settings.token_pack_price_per_million is not None:
        pack = orders.place_token_pack_order(
            session, models, millions=50, payment_method="bank_transfer",
            platform_price_per_million=settings.token_pack_price_per_million)
        invoice = invoices.issue_invoice(session, pack, settings, models.actor)
        bank_transfer.record_bank_receipt(session, finance, invoice, amount=pack.total,
                                          received_on=invoice.issued_at.date(),
                                          bank_reference=f"DEMO-BOC-{pack.id:06d}",
                                          settings=settings)
        done.append(f"{model_co.name}: 50M platform tokens in its wallet")
    postpaid.open_credit_line(session, finance, model_co.id,
                              Money("50000.00", model_co.default_currency))
    done.append(f"{model_co.name}: a postpaid credit line of 50,000.00")
    return done
