"""No page of the storefront is a placeholder: every link a person of each kind of organization
can follow, from the home page on, leads to a working page (in both languages).

The crawl follows same-site links (``<a href>``) breadth first over the demo data, as each demo
person in turn; it never posts anything. Downloads and exports are fetched too: they must answer
with their file, not an error.
"""

from __future__ import annotations

import re
from collections import deque
from urllib.parse import urldefrag, urlsplit

import pytest

from market.accounts.models import User
from market.web.cli.demo import DEMO_PASSWORD
from tests.fixtures import csrf_token

LINK = re.compile(r'<a\s[^>]*href="([^"]+)"')
PEOPLE = ["buyer@demo.market", "finance@demo.market", "models@demo.market",
          "supplier@demo.market", "processor@demo.market", "reviewer@demo.market",
          "exchange@demo.market", "platform@demo.market"]
MAX_PAGES = 400
QUERY_VARIANTS = 4


@pytest.fixture()
def demo(runner, session):
    result = runner.invoke(args=["market", "seed-demo"])
    assert result.exit_code == 0, result.output


def _sign_in(app, email: str, language: str):
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD,
                                           "csrf_token": csrf_token(client, "/login")})
    assert response.status_code == 302, email
    return client


def _links(html: str) -> list[str]:
    found = []
    for href in LINK.findall(html):
        href = urldefrag(href.replace("&amp;", "&"))[0]
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not href.startswith("/"):
            continue  # another site (none expected) or a fragment
        found.append(href)
    return found


def _crawl(client) -> dict[str, int]:
    """Status of every page reached; a path's query variants (the catalogue's facet links
    combine without end) are followed a few times each, not all."""
    seen: dict[str, int] = {}
    variants: dict[str, int] = {}
    queue = deque(["/"])
    while queue and len(seen) < MAX_PAGES:
        path = queue.popleft()
        if path in seen:
            continue
        bare = path.split("?", 1)[0]
        if bare != path and variants.get(bare, 0) >= QUERY_VARIANTS:
            continue
        variants[bare] = variants.get(bare, 0) + 1
        response = client.get(path)
        seen[path] = response.status_code
        if response.mimetype == "text/html" and response.status_code == 200:
            for link in _links(response.get_data(as_text=True)):
                if link not in seen:
                    queue.append(link)
        response.close()
    return seen


@pytest.mark.parametrize("language", ["en", "zh-CN"])
@pytest.mark.parametrize("email", PEOPLE)
def test_every_link_leads_to_a_working_page(app, demo, session, email, language):
    assert session.query(User).filter_by(email=email).count() == 1
    client = _sign_in(app, email, language)
    statuses = _crawl(client)
    broken = {path: status for path, status in statuses.items() if status >= 400}
    assert not broken, f"{email} ({language}) reaches broken pages: {broken}"
    assert len(statuses) > 5  # the crawl really walked the site


def test_anonymous_visitors_reach_only_working_pages(app, demo):
    client = app.test_client()
    statuses = _crawl(client)
    broken = {path: status for path, status in statuses.items() if status >= 400}
    assert not broken, broken
