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
CSV, numeric cells holding the exact decimal digits in XLSX (never a float). Text that came from
users (organization names) is made inert for spreadsheets, as in every export
(``billing.spreadsheets``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, Mapping

from openpyxl import Workbook
from openpyxl.styles import Font
from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.spreadsheets import append_row, csv_file
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
    return [row.currency, row.term, row.item, row.organization_id, row.organization,
            row.amount]


def reconciliation_csv(figures: Mapping[str, Any], names: Mapping[int, str]) -> bytes:
    """The reconciliation as CSV in UTF-8 with a byte-order mark: a header, the identity's
    terms, then the totals and checks; the two tables are each introduced by a title row."""
    return csv_file([
        *_header(figures), [], [bilingual("terms")], TERM_HEADER,
        *(_term_cells(row) for row in term_rows(figures, names)),
        [], [bilingual("summary")], SUMMARY_HEADER,
        *summary_rows(figures, names)])


def reconciliation_xlsx(figures: Mapping[str, Any], names: Mapping[int, str]) -> bytes:
    """The reconciliation as a workbook: sheet ``terms`` (the identity's rows, with a bilingual
    heading row above the machine keys) and sheet ``summary``; amounts are numeric cells."""
    workbook = Workbook()
    bold = Font(bold=True)
    terms = workbook.active
    terms.title = "terms"
    for row in _header(figures):
        terms.cell(row=append_row(terms, row), column=1).font = bold
    terms.append([])
    append_row(terms, [bilingual(c) for c in TERM_HEADER])
    for cell in terms[append_row(terms, TERM_HEADER)]:
        cell.font = bold
    for row in term_rows(figures, names):
        number = append_row(terms, _term_cells(row))
        terms.cell(row=number, column=6).number_format = _number_format(row.currency)
    for letter, width in zip("ABCDEF", (26, 18, 20, 16, 36, 16)):
        terms.column_dimensions[letter].width = width

    summary = workbook.create_sheet("summary")
    append_row(summary, [bilingual(c) for c in SUMMARY_HEADER])
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


def _number_format(currency: str) -> str:
    places = minor_units(currency)
    return "#,##0" + ("." + "0" * places if places else "")


def filename(period: str, extension: str) -> str:
    """``reconciliation-2026-01.csv``: the period is validated as YYYY-MM before this."""
    safe = "".join(c if c.isalnum() or c == "-" else "-" for c in period)
    return f"reconciliation-{safe}.{extension}"
