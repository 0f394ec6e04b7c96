"""The buyer's usage page: its tables and chart data come from the organization's usage events
only, over the chosen business days (Beijing); the chart library is served from our own static
files."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from zoneinfo import ZoneInfo

import pytest

from billing.models import UsageEvent
from market.core.db import utcnow
from tests.billing.shop import listed_dataset
from tests.factories import make_key, make_org

BEIJING = ZoneInfo("Asia/Shanghai")  # the business time zone (BUSINESS_TIMEZONE)
RANGE = {"from": "2026-10-01", "to": "2026-10-07"}
_requests = itertools.count(1)
USAGE_DATA = re.compile(r'<script type="application/json" id="usage-data">(.*?)</script>', re.S)
SCRIPT_SOURCES = re.compile(r'<script[^>]*\ssrc="([^"]+)"')


def usage(session, org, dataset, key, at, *, tokens, amount_minor, paid_by="wallet"):
    """A data call served (and so charged) at ``at``."""
    session.add(UsageEvent(
        request_id=f"usage-page-{next(_requests)}", organization_id=org.id,
        api_key_id=key.id if key else None, dataset_id=dataset.id, kind="data", tokens=tokens,
        unit_price="12.5", amount_minor=amount_minor, currency="CNY", paid_by=paid_by,
        period=at.strftime("%Y-%m"), occurred_at=at, recorded_at=at))


@pytest.fixture()
def used(session, passwords, org):
    """Usage of the signed-in buyer's organization (``org``) and of another one, in October."""
    listed = listed_dataset(session, passwords)
    dataset = listed["dataset"]
    key, _ = make_key(session, org)
    other_org = make_org(session, "buyer", name="Someone Else")
    other_key, _ = make_key(session, other_org)
    at = lambda day, hour=12, minute=0: dt.datetime(  # noqa: E731
        2026, 10, day, hour, minute, tzinfo=BEIJING)
    usage(session, org, dataset, key, at(2), tokens=1_000_000, amount_minor=1250)
    usage(session, org, dataset, key, at(2, 23, 59), tokens=200_000, amount_minor=250,
          paid_by="subscription")
    usage(session, org, dataset, None, at(5, 0, 0), tokens=40_000, amount_minor=50,
          paid_by="postpaid")
    usage(session, org, dataset, key, at(8, 0, 0), tokens=7_777_777, amount_minor=9999)  # after
    usage(session, org, dataset, key, at(1, 0, 0) - dt.timedelta(seconds=1),
          tokens=6_666_666, amount_minor=8888)  # before
    usage(session, other_org, dataset, other_key, at(3), tokens=5_555_555, amount_minor=6944)
    session.commit()
    return {"dataset": dataset, "key": key, "other_key": other_key}


def _text(response) -> str:
    return response.get_data(as_text=True)


def _chart(page: str) -> dict:
    match = USAGE_DATA.search(page)
    assert match, "no embedded usage data"
    return json.loads(match.group(1))


def _table(page: str, class_: str) -> str:
    match = re.search(rf'<table class="{class_}">(.*?)</table>', page, re.S)
    assert match, f"no table {class_}"
    return match.group(1)


def _cells(html: str) -> list[str]:
    return [" ".join(re.sub(r"<[^>]+>", " ", cell).split())
            for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", html, re.S)]


def test_the_tables_show_only_the_organizations_usage_in_the_range(owner_client, used):
    response = owner_client.get("/usage", query_string=RANGE)
    assert response.status_code == 200
    page = _text(response)
    assert used["other_key"].prefix not in page and "5,555,555" not in page
    assert "7,777,777" not in page and "6,666,666" not in page  # outside the range

    datasets = _cells(_table(page, "usage-datasets"))
    assert datasets[4:8] == ["Grid load series", "1,240,000", "CNY 15.50", "3"]
    assert datasets[-4:] == ["Total", "1,240,000", "CNY 15.50", "3"]

    keys = _cells(_table(page, "usage-keys"))
    assert keys[4:12] == [f"{used['key'].prefix} test key", "1,200,000", "CNY 15.00", "2",
                          "No API key", "40,000", "CNY 0.50", "1"]

    paid_by = _cells(_table(page, "usage-paid-by"))
    assert paid_by[4:16] == ["Token wallets", "1,000,000", "CNY 12.50", "1",
                             "Subscription allowance", "200,000", "CNY 2.50", "1",
                             "Postpaid (credit line)", "40,000", "CNY 0.50", "1"]


def test_the_chart_data_has_every_day_of_the_range_with_its_tokens(owner_client, used):
    chart = _chart(_text(owner_client.get("/usage", query_string=RANGE)))
    assert chart["days"] == [f"2026-10-0{d}" for d in range(1, 8)]
    # 23:59 Beijing on the 2nd counts on the 2nd, midnight on the 5th on the 5th.
    assert chart["tokens"] == [0, 1_200_000, 0, 0, 40_000, 0, 0]
    assert chart["labels"][1] == "Oct 2" and chart["titles"][1] == "Oct 2, 2026"
    assert chart["label"] == "Tokens"


def test_the_range_form_shows_the_range_and_defaults_to_the_last_30_days(owner_client, session,
                                                                          used, org):
    page = _text(owner_client.get("/usage", query_string=RANGE))
    assert 'name="from" type="date" value="2026-10-01"' in page
    assert 'name="to" type="date" value="2026-10-07"' in page

    now = utcnow()
    usage(session, org, used["dataset"], used["key"], now, tokens=321, amount_minor=1)
    session.commit()
    page = _text(owner_client.get("/usage"))
    chart = _chart(page)
    today = now.astimezone(BEIJING).date()  # today on the business calendar
    assert chart["days"][-1] == today.isoformat() and len(chart["days"]) == 30
    assert chart["days"][0] == (today - dt.timedelta(days=29)).isoformat()
    assert chart["tokens"][-1] == 321 and sum(chart["tokens"]) == 321
    assert f'name="to" type="date" value="{today.isoformat()}"' in page


@pytest.mark.parametrize("query, message", [
    ({"from": "2026-10-07", "to": "2026-10-01"}, "The end of the range comes before its start."),
    ({"from": "2024-01-01", "to": "2026-10-01"}, "Choose at most 366 days."),
    ({"from": "1 October", "to": "2026-10-01"}, "Not a valid date value."),
])
def test_a_range_that_does_not_make_sense_is_refused_on_the_form(owner_client, used, query,
                                                                 message):
    response = owner_client.get("/usage", query_string=query)
    assert response.status_code == 422
    page = _text(response)
    assert message in page
    assert 'id="usage-data"' not in page and "usage-chart.js" not in page


@pytest.mark.parametrize("role", ["owner", "member", "finance", "reviewer"])
def test_every_member_role_may_read_usage_and_finds_it_in_the_menu(sign_in_as, org, used, role):
    # usage:read is granted to every member role: there is no role to refuse (403) here.
    client = sign_in_as(org, role)
    response = client.get("/usage", query_string=RANGE)
    assert response.status_code == 200
    assert '<a href="/usage">Usage</a>' in _text(response)
    assert "1,240,000" in _text(response)


def test_people_who_are_not_signed_in_are_sent_to_sign_in(client):
    response = client.get("/usage")
    assert response.status_code == 302
    assert "/login" in response.location


def test_the_page_renders_in_chinese(owner_client, used):
    response = owner_client.get("/usage", query_string=RANGE,
                                headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert response.status_code == 200
    page = _text(response)
    assert 'lang="zh-CN"' in page
    assert "电网负荷数据" in _table(page, "usage-datasets")
    assert "Grid load series" not in page
    assert "2026年10月2日" in page  # the day table, in the locale
    chart = _chart(page)
    assert chart["labels"][1] == "10月2日" and chart["titles"][1] == "2026年10月2日"
    assert chart["tokens"] == [0, 1_200_000, 0, 0, 40_000, 0, 0]


def test_the_chart_library_is_ours_and_no_script_comes_from_elsewhere(owner_client, used):
    response = owner_client.get("/usage", query_string=RANGE)
    page = _text(response)
    sources = SCRIPT_SOURCES.findall(page)
    assert sources == ["/static/vendor/chart.umd.min.js", "/static/usage-chart.js"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert not re.search(r"<script(?![^>]*\b(src|type=\"application/json\"))[^>]*>", page), \
        "an inline script would break the CSP"

    library = owner_client.get("/static/vendor/chart.umd.min.js")
    assert library.status_code == 200
    assert "javascript" in library.mimetype
    assert b"Chart.js v4." in library.get_data()[:200]
    library.close()
    chart_js = owner_client.get("/static/usage-chart.js")
    assert chart_js.status_code == 200 and b"Chart.js 4.6.1" in chart_js.get_data()
    chart_js.close()
