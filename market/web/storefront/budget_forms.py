"""Forms of the budget pages (Flask-WTF: each carries a CSRF token): a budget, a line, and an
amendment of a line. They check the shape of what is typed; ``billing.budgets.lines`` decides the rest
(one budget per year and currency, a decrease never below what a line has used...)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField, DecimalField, IntegerField, RadioField, SelectField, StringField,
    TextAreaField, ValidationError,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired, Email, InputRequired, Length, NumberRange, Optional,
)

from billing.budgets.lines import DEFAULT_THRESHOLDS, MAX_REASON
from billing.models.budgets import BUDGET_CATEGORIES
from market.web.boundary import BoundedForm
from market.catalog.taxonomy import SECTORS
from market.web.storefront.forms import choices, optional_int

CATEGORY_LABELS = {
    "data_purchase": _l("Data purchase"),
    "compute": _l("Compute"),
    "model_services": _l("Model services"),
    "other": _l("Other"),
}
ENFORCEMENT_LABELS = {
    "block": _l("Block: refuse a purchase beyond a line's remaining amount"),
    "warn": _l("Warn: allow it, and flag it"),
}
AMENDMENT_LABELS = {
    "increase": _l("Increase"),
    "decrease": _l("Decrease"),
    "transfer": _l("Transfer to another line"),
}
MAX_THRESHOLDS = 10  # what the API accepts


def parse_thresholds(text: str) -> list[int]:
    """``"50, 80,90"`` → ``[50, 80, 90]``; ValueError for anything else."""
    parts = [part.strip().rstrip("%").strip() for part in (text or "").split(",")]
    parts = [part for part in parts if part]
    if not parts or len(parts) > MAX_THRESHOLDS or not all(p.isdigit() for p in parts):
        raise ValueError(text)
    return sorted({int(p) for p in parts})


class BudgetForm(BoundedForm):
    """A budget for one fiscal year in one currency."""

    fiscal_year = IntegerField(_l("Fiscal year"),
                               validators=[InputRequired(), NumberRange(min=2000, max=2100)])
    currency = StringField(_l("Currency"), validators=[DataRequired(), Length(min=3, max=3)])
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    enforcement = RadioField(_l("Enforcement"), default="block", validators=[DataRequired()],
                             choices=[SelectChoice(k, v) for k, v in ENFORCEMENT_LABELS.items()])
    require_purchase_order = BooleanField(_l("Purchase-order numbers required"))
    thresholds = StringField(_l("Alert thresholds (percentages, comma-separated)"),
                             default=", ".join(str(t) for t in DEFAULT_THRESHOLDS),
                             validators=[DataRequired()])
    alert_email = StringField(_l("Alert e-mail"),
                              validators=[Optional(), Length(max=254), Email()])

    def validate_thresholds(self, field) -> None:
        try:
            marks = parse_thresholds(field.data)
        except ValueError:
            raise ValidationError(_l("Whole percentages from 1 to 100, separated by commas.")
                                  ) from None
        if any(not 1 <= mark <= 100 for mark in marks):
            raise ValidationError(_l("Whole percentages from 1 to 100, separated by commas."))

    def threshold_values(self) -> list[int]:
        return parse_thresholds(self.thresholds.data)


class AlertWebhookForm(BoundedForm):
    """Where the budget's threshold alerts are posted, signed (checked by the service)."""

    url = StringField(_l("Webhook URL"), validators=[DataRequired(), Length(max=500)])


class BudgetLineForm(BoundedForm):
    """A line of a budget with its approved amount."""

    code = StringField(_l("Code"), validators=[DataRequired(), Length(max=40)])
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=200)])
    category = SelectField(_l("Category"), default="data_purchase",
                           choices=[SelectChoice(c, CATEGORY_LABELS[c])
                                    for c in BUDGET_CATEGORIES])
    project = StringField(_l("Project (optional)"), validators=[Optional(), Length(max=200)])
    sector = SelectField(_l("Sector (optional)"), validators=[Optional()])
    approved = DecimalField(_l("Approved amount"), places=2,
                            validators=[InputRequired(), NumberRange(min=0)])
    default_for_api = BooleanField(_l("Metered API usage is charged to this line"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sector.choices = [SelectChoice("", _l("None"))] + choices(SECTORS)


class AmendmentForm(BoundedForm):
    """An amendment of one line (one form per line on the budget page: prefixed)."""

    kind = RadioField(_l("Amendment"), default="increase", validators=[DataRequired()],
                      choices=[SelectChoice(k, v) for k, v in AMENDMENT_LABELS.items()])
    amount = DecimalField(_l("Amount"), places=2,
                          validators=[InputRequired(), NumberRange(min=0)])
    to_line_id = SelectField(_l("To line (transfers)"), coerce=optional_int,
                             validate_choice=False)
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(), Length(max=MAX_REASON)])

    def __init__(self, *args, other_lines=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.to_line_id.choices = [SelectChoice("", "—")] + [
            SelectChoice(str(line.id), f"{line.code} — {line.name}") for line in other_lines]
