"""A period's reconciliation as files for finance and auditors: CSV and XLSX.

The files are built so that the conservation identity can be checked from them alone, with no
access to the marketplace::

    Σ participants + platform revenue + tax + Σ buyer credit movement = collected − refunds

Every amount the identity needs is a row of one table, with its ``term`` (a machine key that
never changes with the language) and its sign: ``collected`` by kind of receipt, ``refunds``,
each ``participant``'s share (its statement's activity, payouts excluded), ``platform_revenue``,
``tax``, and each buyer's ``buyer_credit`` by part (prepaid wallet, overpaid, underpaid, other,
receivable). A second table repeats the totals, the payouts, other clearing movements, the
processor difference and the ``difference`` (the identity's left side less its right), for the
reader who does not add up.

Amounts come from the reconciliation's integer minor units through ``Money``: decimal strings in
CSV, numeric cells holding the exact decimal digits in XLSX (``exact_amount``; never a float).
Text that came from users (organization names) is made inert for spreadsheets: control characters
(carriage return included) are replaced, and a cell that would start a formula (``=``, ``+``,
``-``, ``@``, tab) is prefixed with an apostrophe and written as text.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, Mapping

from openpyxl import Workbook
from openpyxl.cell.cell import TYPE_STRING
from openpyxl.styles import Font
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.accounts.models import Organization
from pricing.money import Money, minor_units

CSV_MEDIA_TYPE = "text/csv"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MEDIA_TYPES = {"csv": CSV_MEDIA_TYPE, "xlsx": XLSX_MEDIA_TYPE}

IDENTITY = ("Σ participant + platform_revenue + tax + Σ buyer_credit = "
            "Σ collected − refunds")

LABELS = {
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


def bilingual(key: str, labels: Mapping[str, tuple[str, str]] = LABELS) -> str:
    zh, en = labels.get(key, (key, key))
    return f"{zh} / {en}"


# Text that a spreadsheet reads as inert ---------------------------------------------------------

# Every control character but tab and line feed (XML cannot hold most, and reads CR as LF).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_FORMULA_START = ("=", "+", "-", "@", "\t")


def safe_text(value: str) -> str:
    """``value`` with control characters replaced by U+FFFD (XLSX cannot hold them) and an
    apostrophe before a leading formula character, so a name like ``=HYPERLINK(...)`` is shown
    as the text it is and never evaluated."""
    value = _CONTROL.sub("\ufffd", value)
    return "'" + value if value.startswith(_FORMULA_START) else value


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


def _header(figures: Mapping[str, Any]) -> list[list[str]]:
    return [[bilingual("reconciliation"), figures["period"]],
            [bilingual("from"), figures["from"]],
            [bilingual("to"), figures["to"]],
            [bilingual("identity"), IDENTITY]]


def _term_cells(row: TermRow) -> list:
    return [row.currency, row.term, row.item,
            "" if row.organization_id is None else row.organization_id,
            safe_text(row.organization), row.amount]


def reconciliation_csv(figures: Mapping[str, Any], names: Mapping[int, str]) -> bytes:
    """The reconciliation as CSV in UTF-8 with a byte-order mark: a header, the identity's
    terms, then the totals and checks; the two tables are each introduced by a title row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows(_header(figures))
    writer.writerow([])
    writer.writerow([bilingual("terms")])
    writer.writerow(TERM_HEADER)
    for row in term_rows(figures, names):
        cells = _term_cells(row)
        cells[-1] = format(row.amount, "f")
        writer.writerow(cells)
    writer.writerow([])
    writer.writerow([bilingual("summary")])
    writer.writerow(SUMMARY_HEADER)
    for currency, key, item, amount in summary_rows(figures, names):
        writer.writerow([currency, key, safe_text(item), format(amount, "f")])
    return out.getvalue().encode("utf-8-sig")


def exact_amount(cell, amount: Decimal, currency: str) -> None:
    """Write ``amount`` into a numeric cell as its exact decimal digits.

    openpyxl writes a number (a ``Decimal`` too) through ``"%.16g"`` of a float, so 96.90 is
    stored as 96.90000000000001; given text with the numeric type it stores the text as it
    is, which is what a reader of the file should find."""
    cell.value = format(amount, "f")
    cell.data_type = "n"
    cell.number_format = _number_format(currency)


def _text_cells(sheet, row: int, columns: range) -> None:
    """Cells holding user text stay text, whatever they start with."""
    for column in columns:
        cell = sheet.cell(row=row, column=column)
        if isinstance(cell.value, str):
            cell.data_type = TYPE_STRING


def reconciliation_xlsx(figures: Mapping[str, Any], names: Mapping[int, str]) -> bytes:
    """The reconciliation as a workbook: sheet ``terms`` (the identity's rows, with a bilingual
    heading row above the machine keys) and sheet ``summary``; amounts are numeric cells."""
    workbook = Workbook()
    bold = Font(bold=True)
    terms = workbook.active
    terms.title = "terms"
    for row in _header(figures):
        terms.append(row)
        terms.cell(row=terms.max_row, column=1).font = bold
    terms.append([])
    terms.append([bilingual(c) for c in TERM_HEADER])
    terms.append(list(TERM_HEADER))
    for cell in terms[terms.max_row]:
        cell.font = bold
    for row in term_rows(figures, names):
        terms.append(_term_cells(row))
        _text_cells(terms, terms.max_row, range(1, 6))
        exact_amount(terms.cell(row=terms.max_row, column=6), row.amount, row.currency)
    for letter, width in zip("ABCDEF", (26, 18, 20, 16, 36, 16)):
        terms.column_dimensions[letter].width = width

    summary = workbook.create_sheet("summary")
    summary.append([bilingual(c) for c in SUMMARY_HEADER])
    summary.append(list(SUMMARY_HEADER))
    for cell in summary[summary.max_row]:
        cell.font = bold
    for currency, key, item, amount in summary_rows(figures, names):
        summary.append([currency, key, safe_text(item), amount])
        _text_cells(summary, summary.max_row, range(1, 4))
        exact_amount(summary.cell(row=summary.max_row, column=4), amount, currency)
    for letter, width in zip("ABCD", (12, 24, 36, 16)):
        summary.column_dimensions[letter].width = width
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _number_format(currency: str) -> str:
    places = minor_units(currency)
    return "#,##0" + ("." + "0" * places if places else "")


def filename(period: str, extension: str) -> str:
    """``reconciliation-2026-01.csv``: the period is validated as YYYY-MM before this."""
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in period)
    return f"reconciliation-{safe}.{extension}"
