"""Settlement files for accountants, finance and auditors: a statement as CSV, XLSX, PDF or a
signed bundle, and a period's reconciliation as CSV or XLSX.

Amounts come from integer minor units through ``Money``, so they are exact decimals everywhere:
decimal strings in CSV, numeric cells holding the exact digits with the currency's decimal
places in XLSX (never a float), text in the PDF. Text that came from users (names,
descriptions, references) is written inert in CSV and XLSX (``billing.spreadsheets``) and
printable in the PDF. Every heading is bilingual (中文 / English), since the same file goes to
participants in and outside China. These are pure functions of what they are given; they read
no database and no request, except ``parties_of`` and ``organization_names``, which load the
names the files print.

A statement's files name its participant, its exchange and the platform, its lines and its
totals; the bundle adds its hashed content, the signed checkpoint that recorded its hash and the
platform's public key.

A reconciliation's files are built so that the conservation identity can be checked from them
alone, with no access to the marketplace::

    Σ participants + platform revenue + tax + Σ buyer credit movement = collected − refunds

Every amount the identity needs is a row of one table, with its ``term`` (a machine key that
never changes with the language) and its sign: ``collected`` by kind of receipt, ``refunds``,
each ``participant``'s share (its statement's activity, payouts excluded), ``platform_revenue``,
``tax``, and each buyer's ``buyer_credit`` by part (prepaid wallet, overpaid, underpaid, other,
receivable). A second table repeats the totals, the payouts, other clearing movements, the
processor difference and the ``difference`` (the identity's left side less its right), for the
reader who does not add up.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Iterator, Mapping
from xml.sax.saxutils import escape

from openpyxl import Workbook
from openpyxl.styles import Font
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.models.statements import SettlementStatement, StatementStatus
from billing.spreadsheets import append_row, csv_file, printable
from market.accounts.models import Organization, OrganizationRole
from market.catalog.models import Dataset
from pricing.money import Money, minor_units

CSV_MEDIA_TYPE = "text/csv"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF_MEDIA_TYPE = "application/pdf"
ZIP_MEDIA_TYPE = "application/zip"
MEDIA_TYPES = {"csv": CSV_MEDIA_TYPE, "xlsx": XLSX_MEDIA_TYPE, "pdf": PDF_MEDIA_TYPE,
               "zip": ZIP_MEDIA_TYPE}


def bilingual(key: str, labels: Mapping[str, tuple[str, str]]) -> str:
    """``中文 / English`` of ``key`` in ``labels`` (the key itself where it has no label)."""
    zh, en = labels.get(key, (key, key))
    return f"{zh} / {en}"


def _number_format(currency: str) -> str:
    places = minor_units(currency)
    return "#,##0" + ("." + "0" * places if places else "")


# A statement ------------------------------------------------------------------------------------

# Built into reportlab (Adobe's Asian font pack, resolved by the PDF reader): no font file.
CJK_FONT = "STSong-Light"
# Hashes and amounts in a standard font, so they are plain text in the PDF (searchable).
FIXED_FONT = "Courier"

STATEMENT_LABELS = {
    "statement": ("结算单", "Settlement statement"),
    "number": ("编号", "Number"),
    "participant": ("参与方", "Participant"),
    "registration_number": ("统一社会信用代码", "Registration number"),
    "exchange": ("数据交易所", "Exchange"),
    "platform": ("平台", "Platform"),
    "parties": ("各方", "Parties"),
    "period": ("结算期间", "Period"),
    "currency": ("币种", "Currency"),
    "status": ("状态", "Status"),
    "cutoff": ("截止时间", "Cutoff"),
    "content_hash": ("内容哈希 (SHA-256)", "Content hash (SHA-256)"),
    "totals": ("合计", "Totals"),
    "by_kind": ("按类型合计", "Totals by kind"),
    "lines": ("明细", "Lines"),
    "date": ("日期", "Date"),
    "kind": ("类型", "Kind"),
    "order": ("订单", "Order"),
    "dataset": ("数据集", "Dataset"),
    "description": ("说明", "Description"),
    "gross": ("总额", "Gross"),
    "amount": ("应付参与方金额", "Amount"),
    "opening": ("期初余额", "Opening balance"),
    "activity": ("本期发生额", "Activity"),
    "closing": ("期末余额", "Closing balance"),
    "none": ("无", "None"),
}

KIND_LABELS = {
    "sale": ("销售", "Sale"), "subscription": ("订阅", "Subscription"),
    "custom": ("定制数据", "Custom data"), "usage": ("用量", "Usage"),
    "royalty": ("版税", "Royalty"), "refund": ("退款", "Refund"),
    "adjustment": ("调整", "Adjustment"), "payout": ("付款", "Payout"),
    "other": ("其他", "Other"),
}

STATUS_LABELS = {
    StatementStatus.DRAFT: ("草稿", "Draft"), StatementStatus.ISSUED: ("已出具", "Issued"),
    StatementStatus.UNDER_REVIEW: ("审核中", "Under review"),
    StatementStatus.APPROVED: ("已批准", "Approved"),
    StatementStatus.DISPUTED: ("有异议", "Disputed"), StatementStatus.PAID: ("已付款", "Paid"),
}


@dataclass(frozen=True)
class Party:
    name: str
    registration_number: str | None = None


@dataclass(frozen=True)
class StatementParties:
    """Who a statement is between, and the titles of the datasets its lines name."""

    participant: Party
    exchange: Party | None
    platform: Party
    dataset_titles: Mapping[int, str] = field(default_factory=dict)


# Named on statements when no organization holds the platform role (a fresh installation).
DEFAULT_PLATFORM = "Data Marketplace"


def _party(organization: Organization | None) -> Party | None:
    if organization is None:
        return None
    return Party(organization.name, organization.registration_number)


def parties_of(session: Session, statement: SettlementStatement, *,
               zh: bool = False) -> StatementParties:
    """The participant, its exchange, the platform (the organization holding the platform
    role) and the titles of the datasets on the lines, in Chinese or English."""
    platform = session.scalar(
        select(Organization).join(OrganizationRole)
        .where(OrganizationRole.role == "platform").order_by(Organization.id).limit(1))
    ids = {line.dataset_id for line in statement.lines if line.dataset_id is not None}
    titles = {d.id: (d.title_zh if zh else d.title_en) for d in session.scalars(
        select(Dataset).where(Dataset.id.in_(ids)))} if ids else {}
    exchange = (session.get(Organization, statement.exchange_id)
                if statement.exchange_id is not None else None)
    return StatementParties(
        participant=_party(session.get(Organization, statement.organization_id)),
        exchange=_party(exchange),
        platform=_party(platform) or Party(DEFAULT_PLATFORM),
        dataset_titles=titles)


def _label(key: str) -> str:
    return bilingual(key, STATEMENT_LABELS)


def _amount(minor: int | None, currency: str) -> Decimal | None:
    return None if minor is None else Money.from_minor(minor, currency).amount


def _dataset(parties: StatementParties, dataset_id: int | None) -> str:
    if dataset_id is None:
        return ""
    title = parties.dataset_titles.get(dataset_id)
    return f"{dataset_id} {title}" if title else str(dataset_id)


def _header_rows(statement: SettlementStatement, parties: StatementParties) -> list[list[str]]:
    participant = parties.participant
    return [
        [_label("statement"), statement.number],
        [_label("participant"), participant.name],
        [_label("registration_number"), participant.registration_number or ""],
        [_label("exchange"), parties.exchange.name if parties.exchange else ""],
        [_label("platform"), parties.platform.name],
        [_label("period"), statement.period],
        [_label("currency"), statement.currency],
        [_label("status"), bilingual(statement.status, STATUS_LABELS)],
        [_label("content_hash"), statement.content_hash],
    ]


LINE_COLUMNS = ("date", "kind", "order", "dataset", "description", "gross", "amount")


def _line_values(statement: SettlementStatement, parties: StatementParties):
    """Each line as (date, kind, order, dataset, description, gross, amount) with Decimals."""
    for line in statement.lines:
        yield (line.occurred_on.isoformat(), bilingual(line.kind, KIND_LABELS),
               line.order_number or "", _dataset(parties, line.dataset_id), line.description,
               _amount(line.gross_minor, statement.currency),
               _amount(line.amount_minor, statement.currency))


def _total_values(statement: SettlementStatement) -> list[tuple[str, Decimal]]:
    currency = statement.currency
    return [(_label("opening"), _amount(statement.opening_minor, currency)),
            (_label("activity"), _amount(statement.activity_minor, currency)),
            (_label("closing"), _amount(statement.closing_minor, currency))]


def statement_csv(statement: SettlementStatement, parties: StatementParties) -> bytes:
    """The statement as CSV in UTF-8 with a byte-order mark, so spreadsheets read the Chinese."""
    return csv_file([*_header_rows(statement, parties), [],
                     [_label(c) for c in LINE_COLUMNS], *_line_values(statement, parties),
                     [], *_total_values(statement)])


def statement_xlsx(statement: SettlementStatement, parties: StatementParties) -> bytes:
    """The statement as one worksheet; amounts are numeric cells, never text or floats."""
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = statement.period
    bold = Font(bold=True)
    number_format = _number_format(statement.currency)
    for row in _header_rows(statement, parties):
        sheet.cell(row=append_row(sheet, row), column=1).font = bold
    sheet.append([])
    for cell in sheet[append_row(sheet, [_label(c) for c in LINE_COLUMNS])]:
        cell.font = bold
    for values in _line_values(statement, parties):
        row = append_row(sheet, values)
        for column in (6, 7):
            sheet.cell(row=row, column=column).number_format = number_format
    sheet.append([])
    for label, amount in _total_values(statement):
        row = append_row(sheet, [label, amount])
        sheet.cell(row=row, column=1).font = bold
        sheet.cell(row=row, column=2).number_format = number_format
    for letter, width in zip("ABCDEFG", (30, 22, 20, 28, 48, 14, 14)):
        sheet.column_dimensions[letter].width = width
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _register_cjk_font() -> None:
    if CJK_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CJK_FONT))


def statement_pdf(statement: SettlementStatement, parties: StatementParties) -> bytes:
    """The statement as an A4 landscape PDF: parties, period, totals, lines and its hash.

    Written uncompressed and invariant (no creation time or random id), so the same statement
    gives the same bytes and its hash can be found in the file as text."""
    _register_cjk_font()
    text = ParagraphStyle("text", fontName=CJK_FONT, fontSize=9, leading=12)
    heading = ParagraphStyle("heading", parent=text, fontSize=12, leading=16, spaceBefore=8,
                             spaceAfter=4)
    title = ParagraphStyle("title", parent=text, fontSize=16, leading=20, spaceAfter=6)
    currency = statement.currency

    def p(value: str, style=text) -> Paragraph:
        return Paragraph(escape(printable(value)), style)

    def fixed(value: str) -> Paragraph:
        return Paragraph(f'<font name="{FIXED_FONT}">{escape(printable(value))}</font>', text)

    def money(amount: Decimal | None) -> Paragraph:
        return fixed(f"{amount:,.{minor_units(currency)}f}" if amount is not None else "")

    def party(value: Party | None) -> Paragraph:
        if value is None:
            return p(_label("none"))
        registration = (f' <font name="{FIXED_FONT}">'
                        f'{escape(printable(value.registration_number))}</font>'
                        if value.registration_number else "")
        return Paragraph(escape(printable(value.name)) + registration, text)

    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                       ("VALIGN", (0, 0), (-1, -1), "TOP"),
                       ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke)])
    story = [
        p(f"{_label('statement')} {statement.number}", title),
        p(_label("parties"), heading),
        Table([[p(_label("participant")), party(parties.participant)],
               [p(_label("exchange")), party(parties.exchange)],
               [p(_label("platform")), party(parties.platform)]],
              colWidths=[60 * mm, 190 * mm], style=grid),
        p(_label("period"), heading),
        Table([[p(_label("period")), fixed(
                   f"{statement.period} ({statement.period_start.isoformat()} - "
                   f"{statement.period_end.isoformat()})")],
               [p(_label("cutoff")), fixed(statement.cutoff.isoformat(timespec="seconds"))],
               [p(_label("currency")), fixed(currency)],
               [p(_label("status")), p(bilingual(statement.status, STATUS_LABELS))],
               [p(_label("content_hash")), fixed(statement.content_hash)]],
              colWidths=[60 * mm, 190 * mm], style=grid),
        p(_label("totals"), heading),
        Table([[p(label), money(amount)] for label, amount in _total_values(statement)]
              + [[p(f"{_label('by_kind')}: {bilingual(kind, KIND_LABELS)}"),
                  money(Decimal(str(value)))]
                 for kind, value in sorted((statement.totals or {}).items())],
              colWidths=[110 * mm, 50 * mm], style=grid),
        p(_label("lines"), heading),
    ]
    rows = [[p(_label(c)) for c in LINE_COLUMNS]]
    for values in _line_values(statement, parties):
        rows.append([fixed(values[0]), p(values[1]), fixed(values[2]), p(values[3]),
                     p(values[4]), money(values[5]), money(values[6])])
    if len(rows) == 1:
        rows.append([p(_label("none"))] + [""] * (len(LINE_COLUMNS) - 1))
    story.append(Table(rows, repeatRows=1, style=TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke)]),
        colWidths=[24 * mm, 28 * mm, 36 * mm, 40 * mm, 80 * mm, 28 * mm, 28 * mm]))
    story += [Spacer(1, 6 * mm), p(_label("content_hash")), fixed(statement.content_hash)]

    out = io.BytesIO()
    document = SimpleDocTemplate(
        out, pagesize=landscape(A4), invariant=1, pageCompression=0,
        leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=12 * mm,
        title=f"{STATEMENT_LABELS['statement'][1]} {statement.number}",
        author=parties.platform.name)
    document.build(story)
    return out.getvalue()


def statement_filename(statement: SettlementStatement, extension: str) -> str:
    """``statement-ST-2026-01-0001.csv``: safe in a Content-Disposition header as it is."""
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in statement.number)
    return f"statement-{safe}.{extension}"


BUNDLE_README = """A settlement statement, and the platform's signed checkpoint that vouches for it.

statement.csv       the statement, for accountants
statement.json      its content, exactly as hashed, and the content hash (SHA-256)
checkpoint.json     the checkpoint signed at or after the statement's close: the audit chain's
                    head, the ledger's digest and the statements' hashes (payload + signature)
platform-key.pem    the public key the platform says it signs with; get the key from the
                    platform through a channel you trust and compare

Verify: python verify_checkpoint.py --public-key platform-key.pem checkpoint.json \\
            --statement statement.json
(tools/verify_checkpoint.py of the marketplace; it needs only Python and `cryptography`.)
"""


def statement_bundle(statement: SettlementStatement, parties: StatementParties,
                     content: Mapping, checkpoint: Mapping[str, str] | None,
                     public_key_pem: str) -> bytes:
    """The statement with what a third party needs to check it: its hashed content, the signed
    checkpoint that recorded its hash (``checkpoint``: payload and signature) and the platform's
    public key, in one ZIP."""
    out = io.BytesIO()
    # A fixed date in every member: the same statement and checkpoint give the same bytes.
    stamp = (2000, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        def add(name: str, data: bytes | str) -> None:
            bundle.writestr(zipfile.ZipInfo(name, date_time=stamp), data)

        add("README.txt", BUNDLE_README)
        add("statement.csv", statement_csv(statement, parties))
        add("statement.json", json.dumps({"content": content,
                                          "content_hash": statement.content_hash},
                                         ensure_ascii=False, indent=1, sort_keys=True))
        if checkpoint is not None:
            add("checkpoint.json", json.dumps(dict(checkpoint), indent=1, sort_keys=True))
        add("platform-key.pem", public_key_pem)
    return out.getvalue()


# A period's reconciliation ---------------------------------------------------------------------

IDENTITY = ("Σ participant + platform_revenue + tax + Σ buyer_credit = "
            "Σ collected − refunds")

RECONCILIATION_LABELS = {
    "reconciliation": ("对账", "Reconciliation"),
    "period": ("期间", "Period"),
    "from": ("起 (UTC)", "From (UTC)"),
    "to": ("止 (UTC，不含)", "To (UTC, exclusive)"),
    "identity": ("恒等式", "Identity"),
    "terms": ("明细", "Terms"),
    "summary": ("合计与核对", "Totals and checks"),
    "currency": ("币种", "Currency"),
    "term": ("项", "Term"),
    "item": ("子项", "Item"),
    "organization_id": ("组织编号", "Organization id"),
    "organization": ("组织", "Organization"),
    "amount": ("金额", "Amount"),
    "figure": ("指标", "Figure"),
}

# The identity's terms, in the order the table lists them.
TERMS = ("collected", "refunds", "participant", "platform_revenue", "tax", "buyer_credit")
# Which side of the identity a term is on: +1 owed onward (left), -1 money in and out (right).
SIDE = {"collected": -1, "refunds": +1, "participant": +1, "platform_revenue": +1, "tax": +1,
        "buyer_credit": +1}

ITEM_LABELS = {
    "payment": ("银行卡付款", "Card payments"),
    "payment_unapplied": ("未用于订单的银行卡付款", "Card payments kept as credit"),
    "bank_receipt": ("银行转账收款", "Bank transfers received"),
    "wallet": ("预付词元钱包", "Prepaid token wallet"),
    "overpaid": ("多付款", "Overpaid"),
    "underpaid": ("少付款（待补足发票）", "Underpaid (held against open invoices)"),
    "other": ("其他", "Other"),
    "receivable": ("应收款", "Receivable"),
}

SUMMARY = ("gross_collected", "refunds", "participants", "platform_revenue", "tax_payable",
           "buyer_prepaid", "buyer_receivable", "payouts", "other_clearing",
           "processor_difference", "difference")

SUMMARY_LABELS = {
    "gross_collected": ("收款总额", "Gross collected"),
    "refunds": ("退款", "Refunds"),
    "participants": ("应付参与方", "Owed to participants"),
    "platform_revenue": ("平台收入", "Platform revenue"),
    "tax_payable": ("应交税费", "Tax payable"),
    "buyer_prepaid": ("买方预付余额变动", "Buyer credit (prepaid) movement"),
    "buyer_receivable": ("买方应收变动", "Buyer receivable movement"),
    "payouts": ("已付参与方", "Paid out to participants"),
    "other_clearing": ("其他清算变动", "Other clearing movements"),
    "processor_difference": ("与支付机构差额", "Difference from the card processor"),
    "difference": ("差额", "Difference"),
}

TERM_LABELS = {
    "collected": ("收款", "Collected"),
    "refunds": ("退款", "Refunds"),
    "participant": ("参与方份额", "Participant's share"),
    "platform_revenue": ("平台收入", "Platform revenue"),
    "tax": ("税费", "Tax"),
    "buyer_credit": ("买方余额变动", "Buyer credit movement"),
}

TERM_HEADER = ("currency", "term", "item", "organization_id", "organization", "amount")
SUMMARY_HEADER = ("currency", "figure", "item", "amount")


def _heading(key: str) -> str:
    return bilingual(key, RECONCILIATION_LABELS)


# The rows ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TermRow:
    currency: str
    term: str
    item: str
    organization_id: int | None
    organization: str
    amount: Decimal


def organization_names(session: Session, figures: Mapping[str, Any]) -> dict[int, str]:
    """The names of the participants and buyers a reconciliation names."""
    ids: set[int] = set()
    for row in figures["currencies"].values():
        for key in ("participants_by_organization", "payouts_by_organization", "buyer_credit"):
            ids.update(int(i) for i in row.get(key, {}))
    if not ids:
        return {}
    return dict(session.execute(select(Organization.id, Organization.name)
                                .where(Organization.id.in_(ids))).all())


def term_rows(figures: Mapping[str, Any], names: Mapping[int, str]) -> Iterator[TermRow]:
    """Every amount of the identity, one row each, per currency (sorted)."""
    for currency, row in sorted(figures["currencies"].items()):
        def money(minor: int) -> Decimal:
            return Money.from_minor(int(minor), currency).amount

        for kind, minor in sorted(row["collected_by_kind"].items()):
            yield TermRow(currency, "collected", kind, None, "", money(minor))
        yield TermRow(currency, "refunds", "", None, "", money(row["refunds"]))
        for org_id, minor in sorted(row["participants_by_organization"].items()):
            yield TermRow(currency, "participant", "", int(org_id),
                          names.get(int(org_id), ""), money(minor))
        yield TermRow(currency, "platform_revenue", "", None, "", money(row["platform_revenue"]))
        yield TermRow(currency, "tax", "", None, "", money(row["tax_payable"]))
        for org_id, parts in sorted(row["buyer_credit"].items()):
            for part, minor in parts.items():
                if minor:
                    yield TermRow(currency, "buyer_credit", part, int(org_id),
                                  names.get(int(org_id), ""), money(minor))


def summary_rows(figures: Mapping[str, Any], names: Mapping[int, str]
                 ) -> Iterator[tuple[str, str, str, Decimal]]:
    """(currency, figure, item, amount): the totals, the payouts by participant, other
    clearing movements, the processor difference (when it was asked) and the difference."""
    for currency, row in sorted(figures["currencies"].items()):
        for key in SUMMARY:
            if key in row:
                yield (currency, key, "", Money.from_minor(int(row[key]), currency).amount)
            if key == "payouts":
                for org_id, minor in sorted(row["payouts_by_organization"].items()):
                    yield (currency, "payouts", f"{int(org_id)} {names.get(int(org_id), '')}",
                           Money.from_minor(int(minor), currency).amount)


def _reconciliation_header(figures: Mapping[str, Any]) -> list[list[str]]:
    return [[_heading("reconciliation"), figures["period"]],
            [_heading("from"), figures["from"]],
            [_heading("to"), figures["to"]],
            [_heading("identity"), IDENTITY]]


def _term_cells(row: TermRow) -> list:
    return [row.currency, row.term, row.item, row.organization_id, row.organization,
            row.amount]


def reconciliation_csv(figures: Mapping[str, Any], names: Mapping[int, str]) -> bytes:
    """The reconciliation as CSV in UTF-8 with a byte-order mark: a header, the identity's
    terms, then the totals and checks; the two tables are each introduced by a title row."""
    return csv_file([
        *_reconciliation_header(figures), [], [_heading("terms")], TERM_HEADER,
        *(_term_cells(row) for row in term_rows(figures, names)),
        [], [_heading("summary")], SUMMARY_HEADER,
        *summary_rows(figures, names)])


def reconciliation_xlsx(figures: Mapping[str, Any], names: Mapping[int, str]) -> bytes:
    """The reconciliation as a workbook: sheet ``terms`` (the identity's rows, with a bilingual
    heading row above the machine keys) and sheet ``summary``; amounts are numeric cells."""
    workbook = Workbook()
    bold = Font(bold=True)
    terms = workbook.active
    terms.title = "terms"
    for row in _reconciliation_header(figures):
        terms.cell(row=append_row(terms, row), column=1).font = bold
    terms.append([])
    append_row(terms, [_heading(c) for c in TERM_HEADER])
    for cell in terms[append_row(terms, TERM_HEADER)]:
        cell.font = bold
    for row in term_rows(figures, names):
        number = append_row(terms, _term_cells(row))
        terms.cell(row=number, column=6).number_format = _number_format(row.currency)
    for letter, width in zip("ABCDEF", (26, 18, 20, 16, 36, 16)):
        terms.column_dimensions[letter].width = width

    summary = workbook.create_sheet("summary")
    append_row(summary, [_heading(c) for c in SUMMARY_HEADER])
    for cell in summary[append_row(summary, SUMMARY_HEADER)]:
        cell.font = bold
    for currency, key, item, amount in summary_rows(figures, names):
        number = append_row(summary, [currency, key, item, amount])
        summary.cell(row=number, column=4).number_format = _number_format(currency)
    for letter, width in zip("ABCD", (12, 24, 36, 16)):
        summary.column_dimensions[letter].width = width
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def reconciliation_filename(period: str, extension: str) -> str:
    """``reconciliation-2026-01.csv``: the period is validated as YYYY-MM before this."""
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in period)
    return f"reconciliation-{safe}.{extension}"
