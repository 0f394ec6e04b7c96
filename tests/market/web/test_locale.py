"""Pages follow Accept-Language: Chinese pages say so and show the Chinese titles."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("accept, lang, switch", [("zh-CN,zh;q=0.9", 'lang="zh-CN"', "English"),
                                                  ("en-GB,en;q=0.8", 'lang="en"', "中文")])
def test_the_page_language_follows_accept_language(app, connection, accept, lang, switch):
    client = app.test_client()
    page = client.get("/", headers={"Accept-Language": accept}).get_data(as_text=True)
    assert lang in page
    assert switch in page  # the switch offers the other language
