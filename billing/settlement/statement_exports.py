"""A settlement statement as files for the participant's accountants: CSV, XLSX and PDF.

Pure functions of a statement and the parties it names; they read no database and no request
(``parties_of`` alone loads those parties, for the views).
Amounts come from the statement's integer minor units through ``Money``, so they are exact
decimals everywhere: decimal strings in CSV, numeric cells holding the exact digits with the
currency's decimal places in XLSX, text in the PDF. Names, descriptions and references are
written inert in CSV and XLSX (``billing.spreadsheets``) and printable in the PDF. Every
heading is bilingual (中文 / English), since the same file goes to participants in and outside
China.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Mapping
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

from billing.models.statements import SettlementStatement
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

# Built into reportlab (Adobe's Asian font pack, resolved by the PDF reader): no font file.
CJK_FONT = "STSong-Light"
# Hashes and amounts in a standard font, so they are plain text in the PDF (searchable).
FIXED_FONT = "Courier"

LABELS = {
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
    "draft": ("草稿", "Draft"), "issued": ("已出具", "Issued"),
    "under_review": ("审核中", "Under review"), "approved": ("已批准", "Approved"),
    "disputed": ("有异议", "Disputed"), "paid": ("已付款", "Paid"),
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


def bilingual(key: str) -> str:
    zh, en = LABELS[key]
    return f"{zh} / {en}"


def _pair(labels: Mapping[str, tuple[str, str]], value: str) -> str:
    zh, en = labels.get(value, (value, value))
    return f"{zh} / {en}"


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
        [bilingual("statement"), statement.number],
        [bilingual("participant"), participant.name],
        [bilingual("registration_number"), participant.registration_number or ""],
        [bilingual("exchange"), parties.exchange.name if parties.exchange else ""],
        [bilingual("platform"), parties.platform.name],
        [bilingual("period"), statement.period],
        [bilingual("currency"), statement.currency],
        [bilingual("status"), _pair(STATUS_LABELS, statement.status)],
        [bilingual("content_hash"), statement.content_hash],
    ]


LINE_COLUMNS = ("date", "kind", "order", "dataset", "description", "gross", "amount")


def _line_values(statement: SettlementStatement, parties: StatementParties):
    """Each line as (date, kind, order, dataset, description, gross, amount) with Decimals."""
    for line in statement.lines:
        yield (line.occurred_on.isoformat(), _pair(KIND_LABELS, line.kind),
               line.order_number or "", _dataset(parties, line.dataset_id), line.description,
               _amount(line.gross_minor, statement.currency),
               _amount(line.amount_minor, statement.currency))


def _total_values(statement: SettlementStatement) -> list[tuple[str, Decimal]]:
    currency = statement.currency
    return [(bilingual("opening"), _amount(statement.opening_minor, currency)),
            (bilingual("activity"), _amount(statement.activity_minor, currency)),
            (bilingual("closing"), _amount(statement.closing_minor, currency))]


def statement_csv(statement: SettlementStatement, parties: StatementParties) -> bytes:
    """The statement as CSV in UTF-8 with a byte-order mark, so spreadsheets read the Chinese."""
    return csv_file([*_header_rows(statement, parties), [],
                     [bilingual(c) for c in LINE_COLUMNS], *_line_values(statement, parties),
                     [], *_total_values(statement)])


def _number_format(currency: str) -> str:
    places = minor_units(currency)
    return "#,##0" + ("." + "0" * places if places else "")


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
    for cell in sheet[append_row(sheet, [bilingual(c) for c in LINE_COLUMNS])]:
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
            return p(bilingual("none"))
        registration = (f' <font name="{FIXED_FONT}">'
                        f'{escape(printable(value.registration_number))}</font>'
                        if value.registration_number else "")
        return Paragraph(escape(printable(value.name)) + registration, text)

    grid = TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                       ("VALIGN", (0, 0), (-1, -1), "TOP"),
                       ("BACKGROUND", (0, 0), (0, -1), colors.whitesmoke)])
    story = [
        p(f"{bilingual('statement')} {statement.number}", title),
        p(bilingual("parties"), heading),
        Table([[p(bilingual("participant")), party(parties.participant)],
               [p(bilingual("exchange")), party(parties.exchange)],
               [p(bilingual("platform")), party(parties.platform)]],
              colWidths=[60 * mm, 190 * mm], style=grid),
        p(bilingual("period"), heading),
        Table([[p(bilingual("period")), fixed(
                   f"{statement.period} ({statement.period_start.isoformat()} - "
                   f"{statement.period_end.isoformat()})")],
               [p(bilingual("cutoff")), fixed(statement.cutoff.isoformat(timespec="seconds"))],
               [p(bilingual("currency")), fixed(currency)],
               [p(bilingual("status")), p(_pair(STATUS_LABELS, statement.status))],
               [p(bilingual("content_hash")), fixed(statement.content_hash)]],
              colWidths=[60 * mm, 190 * mm], style=grid),
        p(bilingual("totals"), heading),
        Table([[p(label), money(amount)] for label, amount in _total_values(statement)]
              + [[p(f"{bilingual('by_kind')}: {_pair(KIND_LABELS, kind)}"),
                  money(Decimal(str(value)))]
                 for kind, value in sorted((statement.totals or {}).items())],
              colWidths=[110 * mm, 50 * mm], style=grid),
        p(bilingual("lines"), heading),
    ]
    rows = [[p(bilingual(c)) for c in LINE_COLUMNS]]
    for values in _line_values(statement, parties):
        rows.append([fixed(values[0]), p(values[1]), fixed(values[2]), p(values[3]),
                     p(values[4]), money(values[5]), money(values[6])])
    if len(rows) == 1:
        rows.append([p(bilingual("none"))] + [""] * (len(LINE_COLUMNS) - 1))
    story.append(Table(rows, repeatRows=1, style=TableStyle([
        ("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("BACKGROUND", (0, 0), (-1, 0), colors.whitesmoke)]),
        colWidths=[24 * mm, 28 * mm, 36 * mm, 40 * mm, 80 * mm, 28 * mm, 28 * mm]))
    story += [Spacer(1, 6 * mm), p(bilingual("content_hash")), fixed(statement.content_hash)]

    out = io.BytesIO()
    document = SimpleDocTemplate(
        out, pagesize=landscape(A4), invariant=1, pageCompression=0,
        leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=12 * mm,
        title=f"{LABELS['statement'][1]} {statement.number}", author=parties.platform.name)
    document.build(story)
    return out.getvalue()


def filename(statement: SettlementStatement, extension: str) -> str:
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
