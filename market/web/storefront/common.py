"""What the storefront's pages share: the page's language, a service's error shown on a form,
the buyer's budget lines at checkout, and the checks on a posted action and a page to go back
to."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import abort, request
from flask_babel import get_locale
from flask_babel import gettext as _

from billing.budgets import lines as budgets
from market.accounts.authz import Principal
from market.catalog.models import Dataset
from market.core.errors import MarketError
from market.web.formatting import format_money
from market.web.http import db_session
from market.web.storefront.forms import ActionForm


def is_zh() -> bool:
    """Whether the page is in Chinese (Babel parses zh_CN as zh_Hans_CN: the language alone
    decides)."""
    return get_locale().language == "zh"


def dataset_title(dataset: Dataset | None) -> str:
    """The dataset's title in the page's language."""
    if dataset is None:
        return ""
    return dataset.title_zh if is_zh() else dataset.title_en


def form_error(form, exc: MarketError, fields: dict[str, str] | None = None) -> None:
    """Show a service's error next to the field it names (``fields`` maps its names to ours),
    or above the form."""
    name = (fields or {}).get(exc.field, exc.field) if exc.field else None
    field = getattr(form, name, None) if name else None
    if field is not None and hasattr(field, "errors"):
        field.errors = list(field.errors) + [exc.detail]
    else:
        form.form_errors.append(exc.detail)



def budget_lines(principal: Principal, currency: str | None = None) -> list[tuple[int, str]]:
    """This year's budget lines of the buyer (in ``currency``, when the purchase's is known),
    as checkout choices with what each has left."""
    choices = []
    for line in budgets.checkout_lines(db_session(), principal.organization_id):
        if currency is not None and line.budget.currency != currency:
            continue
        left = format_money(line.remaining_minor, line.budget.currency)
        choices.append((line.id, _("%(code)s — %(name)s (%(left)s left)", code=line.code,
                                   name=line.name, left=left)))
    return choices


def require_action_form() -> None:
    """400 for a posted action without the layout's CSRF token."""
    if not ActionForm().validate_on_submit():
        abort(400)


def same_site(target: str | None) -> bool:
    """Whether ``target`` (a referrer) is a page of this site, to send the reader back to."""
    if not target:
        return False
    parts = urlsplit(target)
    return parts.netloc in ("", request.host)
