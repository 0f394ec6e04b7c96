"""The buyer's usage page: tokens and their cost by day, by dataset, by API key and by what paid,
over a date range (the last 30 days unless asked otherwise).

``billing/metering/usage.py`` did not exist when this page was written, so the aggregation lives here, in
a few GROUP BY queries over ``UsageEvent`` that run on SQLite and PostgreSQL alike; when that
service lands this page should call it instead. Days are business days (``BUSINESS_TIMEZONE``);
``occurred_at`` is kept in UTC.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from babel.dates import format_skeleton
from flask import render_template, request
from flask_babel import format_date, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from wtforms import DateField
from wtforms.validators import Optional

from billing.models import UsageEvent
from market.accounts.authz import Principal
from market.accounts.models import ApiKey
from market.web.boundary import BoundedForm
from market.catalog.models import Dataset
from market.core.db import business_calendar, business_day_of, utcnow
from market.web.storefront.blueprint import storefront
from market.web.storefront.views import signed_in
from market.web.http import db_session

DEFAULT_DAYS = 30
MAX_DAYS = 366  # one chart bar a day: a year still reads on a phone held sideways

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
    """Tokens, their cost and the number of calls in one group, in one currency."""

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


def _is_zh() -> bool:
    # Babel parses zh_CN as zh_Hans_CN, so compare the language alone.
    return get_locale().language == "zh"


def usage_report(session: Session, organization_id: int, start: dt.date, end: dt.date
                 ) -> UsageReport:
    """An organization's usage events from ``start`` to ``end`` (both included, business
    days)."""
    calendar = business_calendar(session)
    since, until = calendar.start_of_day(start), calendar.day_bounds(end)[1]
    where = (UsageEvent.organization_id == organization_id, UsageEvent.occurred_at >= since,
             UsageEvent.occurred_at < until)
    tokens, amount, calls = (func.sum(UsageEvent.tokens), func.sum(UsageEvent.amount_minor),
                             func.count(UsageEvent.id))

    day = business_day_of(session, UsageEvent.occurred_at).label("day")
    per_day = {row.day: int(row.tokens) for row in session.execute(
        select(day, tokens.label("tokens")).where(*where).group_by(day))}
    days = [start + dt.timedelta(days=n) for n in range((end - start).days + 1)]

    def lines(*columns, label, note=lambda row: "", join=None, outer=False) -> list[UsageLine]:
        query = select(*columns, UsageEvent.currency, tokens, amount, calls).where(*where)
        if join is not None:
            query = query.join(*join, isouter=outer)
        query = query.group_by(*columns, UsageEvent.currency).order_by(
            tokens.desc(), *columns, UsageEvent.currency)
        # Row: the grouped columns, currency, tokens, amount, calls (PostgreSQL sums to Decimal).
        return [UsageLine(label(row), int(row[-3]), int(row[-2]), row[-4], int(row[-1]),
                          note(row)) for row in session.execute(query)]

    return UsageReport(
        start=start, end=end,
        days=[(d, per_day.get(d.isoformat(), 0)) for d in days],
        by_dataset=lines(UsageEvent.dataset_id, Dataset.title_en, Dataset.title_zh,
                         join=(Dataset, Dataset.id == UsageEvent.dataset_id),
                         label=lambda row: row[2] if _is_zh() else row[1]),
        by_key=lines(UsageEvent.api_key_id, ApiKey.prefix, ApiKey.name,
                     join=(ApiKey, ApiKey.id == UsageEvent.api_key_id), outer=True,
                     # Usage reported without a key (royalty reports, say) still counts: label "".
                     label=lambda row: row[1] or "", note=lambda row: row[2] or ""),
        by_paid_by=lines(UsageEvent.paid_by,
                         label=lambda row: str(PAID_BY_LABELS.get(row[0], row[0]))),
        totals=lines(label=lambda row: row[0]),
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
    end = form["to"].data or business_calendar(db_session()).day_of(utcnow())
    start = form["from"].data or end - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > end:  # only "from" given, after today: show that day
        end = start
    if (end - start).days + 1 > MAX_DAYS:  # only "to" or "from" given, far apart
        start = end - dt.timedelta(days=MAX_DAYS - 1)
    form["from"].data, form["to"].data = start, end
    report = usage_report(db_session(), principal.organization_id, start, end)
    return render_template("billing/usage.html", form=form, report=report,
                           chart=_chart_data(report))
