"""The buyer's usage page: tokens and their cost by day, by dataset, by API key and by what paid,
over a date range (the last 30 days unless asked otherwise). The figures are
``billing.metering.usage``'s report, the one the API serves; this page only labels them in its
language and lists the largest first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from babel.dates import format_skeleton
from flask import render_template, request
from flask_babel import format_date, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session
from wtforms import DateField
from wtforms.validators import Optional

from billing.metering import usage as usage_service
from market.accounts.authz import Principal
from market.core.db import business_calendar, utcnow
from market.web.boundary import BoundedForm
from market.web.http import db_session
from market.web.storefront.blueprint import storefront
from market.web.storefront.common import is_zh
from market.web.storefront.views import signed_in

MAX_DAYS = usage_service.MAX_REPORT_DAYS  # one chart bar a day: a year still reads on a phone

PAID_BY_LABELS = {
    "subscription": _l("Subscription allowance"),
    "wallet": _l("Token wallets"),
    "postpaid": _l("Postpaid (credit line)"),
    "free": _l("Free"),
}


class UsageRangeForm(BoundedForm):
    """The days to show (a GET form: no CSRF); both ends included."""

    class Meta:
        csrf = False

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        start, end = self["from"].data, self["to"].data
        if start and end and start > end:
            self["to"].errors.append(_("The end of the range comes before its start."))
            return False
        if start and end and (end - start).days + 1 > MAX_DAYS:
            self["to"].errors.append(_("Choose at most %(days)s days.", days=MAX_DAYS))
            return False
        return True


# The query's names are "from" and "to", like the usage API's; "from" is a Python keyword, so the
# fields are set by name.
setattr(UsageRangeForm, "from", DateField(_l("From"), validators=[Optional()]))
setattr(UsageRangeForm, "to", DateField(_l("To"), validators=[Optional()]))


@dataclass(frozen=True)
class UsageLine:
    """A row of the page's tables: one of the report's lines, labelled."""

    label: str
    tokens: int
    amount_minor: int
    currency: str
    calls: int
    note: str = ""  # shown beside the label: an API key's name


@dataclass(frozen=True)
class UsageReport:
    start: dt.date
    end: dt.date
    days: list[tuple[dt.date, int]]  # every day of the range, with its tokens (0 when none)
    by_dataset: list[UsageLine]
    by_key: list[UsageLine]
    by_paid_by: list[UsageLine]
    totals: list[UsageLine]  # one per currency

    @property
    def total_tokens(self) -> int:
        return sum(line.tokens for line in self.totals)

    @property
    def total_calls(self) -> int:
        return sum(line.calls for line in self.totals)


def _labelled(lines: list[usage_service.UsageLine], label, note=lambda group: ""
              ) -> list[UsageLine]:
    """The report's lines as the page's rows, the most tokens first."""
    rows = [UsageLine(label(line.group), line.tokens, line.amount_minor, line.currency,
                      line.calls, note(line.group)) for line in lines]
    return sorted(rows, key=lambda row: -row.tokens)


def usage_report(session: Session, organization_id: int, start: dt.date, end: dt.date
                 ) -> UsageReport:
    """An organization's usage charged from ``start`` to ``end`` (both included, business
    days), as the page shows it."""
    def lines(by: str | None) -> list[usage_service.UsageLine]:
        return usage_service.usage_lines(session, organization_id, start, end, by)

    zh = is_zh()
    return UsageReport(
        start=start, end=end,
        days=usage_service.tokens_by_day(session, organization_id, start, end),
        by_dataset=_labelled(lines("dataset"), lambda group: group[
            "dataset_title_zh" if zh else "dataset_title"]),
        # Usage reported without a key (royalty reports, say) still counts: label "".
        by_key=_labelled(lines("key"), lambda group: group["key_prefix"] or "",
                         note=lambda group: group["key_name"] or ""),
        by_paid_by=_labelled(lines("paid_by"), lambda group: str(
            PAID_BY_LABELS.get(group["paid_by"], group["paid_by"]))),
        totals=_labelled(lines(None), lambda group: ""),
    )


def _chart_data(report: UsageReport) -> dict:
    """What usage-chart.js draws: a bar of tokens a day, labelled in the page's language."""
    locale = get_locale()
    return {
        "label": _("Tokens"),
        "days": [d.isoformat() for d, _tokens in report.days],
        "labels": [format_skeleton("MMMd", d, locale=locale) for d, _tokens in report.days],
        "titles": [format_date(d, "medium") for d, _tokens in report.days],
        "tokens": [tokens for _day, tokens in report.days],
    }


@storefront.get("/usage")
@signed_in("usage:read")
def usage(principal: Principal):
    form = UsageRangeForm(formdata=request.args or None)
    if request.args and not form.validate():
        return render_template("billing/usage.html", form=form, report=None, chart=None), 422
    start, end = usage_service.recent_range(
        form["from"].data, form["to"].data, business_calendar(db_session()).day_of(utcnow()))
    form["from"].data, form["to"].data = start, end
    report = usage_report(db_session(), principal.organization_id, start, end)
    return render_template("billing/usage.html", form=form, report=report,
                           chart=_chart_data(report))
