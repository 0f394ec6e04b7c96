"""The Simplified Chinese catalogue: every message of the code is in it and translated, with its
placeholders kept; the committed .mo is the .po compiled; Babel finds it for a zh-CN visitor; and
the pages speak Chinese to Chinese visitors and English to English ones.

Updating the catalogue: README, "Translations".
"""

from __future__ import annotations

import html
import io
import re
from collections import Counter
from pathlib import Path

import pytest
from babel import Locale
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from tests.billing.budgets.test_budget_reports import build_budget
from tests.factories import english_client
from tests.fixtures import csrf_token

ROOT = Path(__file__).resolve().parents[3]
TRANSLATIONS = ROOT / "market" / "web" / "translations"
# Babel reads zh_CN as zh_Hans_CN and Flask-Babel looks for the catalogue under that name.
CATALOGUE = TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES"
PO, MO = CATALOGUE / "messages.po", CATALOGUE / "messages.mo"
# The keywords of the README's `pybabel extract` command, on top of Babel's defaults.
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}
# Written the same in Chinese: names of things.
SAME_IN_CHINESE = {"API", "Webhook"}

PLACEHOLDER = re.compile(
    r"%\((\w+)\)[#0 +\-]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"  # %(name)s
    r"|%[#0 +\-]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]"  # %s
    r"|%%"  # a literal percent sign: Jinja's gettext always formats
    r"|\{\w*(?:[!:][^{}]*)?\}")  # {name}
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
REFRESH = "run the README's Translations commands (pybabel extract, update, translate, compile)"


def _catalogue():
    with PO.open("rb") as f:
        return read_po(f)


def _forms(message) -> tuple[str, ...]:
    return message.string if isinstance(message.string, tuple) else (message.string,)


def _ids(message) -> tuple[str, ...]:
    return message.id if isinstance(message.id, tuple) else (message.id,)


def _placeholders(text: str) -> Counter:
    return Counter(match.group(0) for match in PLACEHOLDER.finditer(text))


def test_every_message_is_translated_into_chinese():
    catalogue = _catalogue()
    messages = [m for m in catalogue if m.id]
    assert len(messages) > 600
    untranslated = [m.id for m in messages if not all(_forms(m))
                    or len(_forms(m)) != catalogue.num_plurals]
    fuzzy = [m.id for m in messages if m.fuzzy]
    english = [m.id for m in messages if all(_forms(m)) and m.id not in SAME_IN_CHINESE
               and not all(CJK.search(form) for form in _forms(m))]
    assert not untranslated, f"untranslated: {untranslated}"
    assert not fuzzy, f"fuzzy (check and clear the flag): {fuzzy}"
    assert not english, f"left in English: {english}"


def test_translations_keep_the_placeholders():
    wrong = []
    for m in _catalogue():
        if not m.id:
            continue
        # ngettext formats both forms with the same variables; every form must use them all.
        expected = _placeholders(_ids(m)[-1])
        wrong += [(m.id, form) for form in _forms(m) if _placeholders(form) != expected]
    assert not wrong, f"placeholders differ: {wrong}"


def test_the_committed_mo_is_the_po_compiled():
    compiled = io.BytesIO()
    write_mo(compiled, _catalogue())
    compiled.seek(0)
    with MO.open("rb") as f:
        committed = read_mo(f)

    def frozen(value):  # plural ids and forms come back as lists from read_mo
        return tuple(value) if isinstance(value, (list, tuple)) else value

    def messages(catalogue):
        return {frozen(m.id): frozen(m.string) for m in catalogue if m.id}

    assert messages(committed) == messages(read_mo(compiled)), \
        "messages.mo is stale: pybabel compile -d market/web/translations"


def test_every_message_in_the_code_is_in_the_catalogue():
    with (ROOT / "babel.cfg").open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    extracted = {message for _, _, message, _, _ in extract_from_dir(
        str(ROOT), method_map, options_map, keywords=KEYWORDS)}
    # Plurals come back as a tuple of both forms, the catalogue keys them by the singular.
    extracted = {m[0] if isinstance(m, tuple) else m for m in extracted}
    assert len(extracted) > 600
    translated = {_ids(m)[0] for m in _catalogue() if m.id and all(_forms(m))}
    missing = sorted(extracted - translated)
    assert not missing, f"not in the catalogue ({REFRESH}): {missing}"


def test_babel_finds_the_catalogue_for_a_zh_cn_visitor(app):
    locale = Locale.parse("zh_CN")  # what the locale selector returns
    translations = Translations.load(str(TRANSLATIONS), [locale])
    assert type(translations) is not NullTranslations, "no catalogue where Babel looks for zh_CN"
    assert translations.gettext("Cart") == "购物车"
    assert Path(app.root_path, app.config["BABEL_TRANSLATION_DIRECTORIES"]) == TRANSLATIONS


# Each page, with a string it shows in Chinese and the same string in English.
PAGES = [
    ("/", "面向人工智能的高质量行业数据集", "High-quality industry datasets for AI"),
    ("/catalog", "搜索数据集", "Search datasets"),
    ("/cart", "购物车为空。", "Your cart is empty."),
    ("/orders", "暂无订单。", "No orders yet."),
    ("/holdings", "词元钱包", "Token wallets"),
    ("/subscriptions", "暂无订阅。", "No subscriptions yet."),
    ("/statements", "贵机构的结算单", "Your settlement statements"),
    ("/budgets", "执行率", "Execution rate"),
    ("/usage", "每日词元用量", "Tokens per day"),
    ("/demands", "发布需求", "Post a demand"),
    ("/account/keys", "每月词元上限", "Monthly token cap"),  # a form label from Python
]
TEXT_NODE = re.compile(r">([^<>]+)<")


def _text_nodes(page: str) -> set[str]:
    page = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    return {html.unescape(t).strip() for t in TEXT_NODE.findall(page)} - {""}


@pytest.fixture(scope="module")
def translated():
    """The English messages the catalogue translates (placeholder-free), to find them on pages."""
    return {m.id for m in _catalogue()
            if isinstance(m.id, str) and m.id and m.string and m.string != m.id
            and not _placeholders(m.id)}


def _get(client, path, accept):
    response = client.get(path, headers={"Accept-Language": accept})
    assert response.status_code == 200, path
    return response.get_data(as_text=True)


@pytest.mark.parametrize("path, chinese, english", PAGES)
def test_pages_speak_chinese_to_chinese_visitors_and_english_to_english_ones(
        owner_client, translated, path, chinese, english):
    zh = _get(owner_client, path, "zh-CN,zh;q=0.9")
    assert 'lang="zh-CN"' in zh and chinese in zh and english not in zh
    assert "数据目录" in zh and "退出登录" in zh  # the navigation
    left_in_english = _text_nodes(zh) & translated
    assert not left_in_english, f"{path} shows English: {left_in_english}"

    en = _get(owner_client, path, "en-GB,en;q=0.8")
    assert 'lang="en"' in en and english in en and chinese not in en
    assert "Catalogue" in en and "Sign out" in en
    chinese_on_english_page = {t for t in _text_nodes(en) if CJK.search(t)} - {"中文"}
    assert not chinese_on_english_page, f"{path} in English shows {chinese_on_english_page}"


def test_a_budget_in_chinese(owner_client, session, org):
    budget = build_budget(session, org)["budget"]
    session.commit()
    zh = _get(owner_client, f"/budgets/{budget.id}", "zh-CN")
    assert "各科目执行情况" in zh and "批复" in zh and "已预占" in zh and "可用余额" in zh
    assert "其中 CNY 50.00 为尚未入账的 API 调用" in zh  # a message with a placeholder
    assert "Execution by line" not in zh and "not yet posted" not in zh
    en = _get(owner_client, f"/budgets/{budget.id}", "en")
    assert "Execution by line" in en and "of which CNY 50.00 by API calls not yet posted" in en


def test_sign_in_in_chinese_with_its_labels_and_errors_from_python(app, connection):
    client = english_client(app)
    page = _get(client, "/login", "zh-CN")
    assert "还没有账户？" in page and "电子邮箱" in page and "密码" in page
    assert "No account yet?" not in page and "Password" not in page
    response = client.post("/login", headers={"Accept-Language": "zh-CN"}, data={
        "csrf_token": csrf_token(client, "/login"), "email": "nobody@example.com",
        "password": "not the password"})
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "电子邮箱或密码错误。" in page and "Wrong e-mail or password." not in page
