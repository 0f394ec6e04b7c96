"""Storefront forms (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, PasswordField, SelectMultipleField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from market.accounts.authz import SCOPES

ORG_ROLE_LABELS = {
    "buyer": _l("Buyer"), "supplier": _l("Supplier"), "processor": _l("Processor / annotator"),
    "exchange": _l("Data exchange"), "channel": _l("Channel partner"), "platform": _l("Platform"),
}
# Exchanges and the platform are set up by the operator, not by self-registration.
SELF_SERVICE_ROLES = ("buyer", "supplier", "processor", "channel")


class CheckboxList(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class RegisterForm(FlaskForm):
    name = StringField(_l("Your name"), validators=[DataRequired(), Length(max=200)])
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Email(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])
    organization_name = StringField(_l("Organization"), validators=[DataRequired(),
                                                                   Length(max=200)])
    roles = CheckboxList(_l("What your organization does here"),
                         choices=[SelectChoice(r, ORG_ROLE_LABELS[r]) for r in SELF_SERVICE_ROLES],
                         validators=[DataRequired()])


class LoginForm(FlaskForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


class ApiKeyForm(FlaskForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])
    scopes = CheckboxList(_l("Scopes"), choices=[SelectChoice(s, s) for s in SCOPES],
                          validators=[DataRequired()])
    requests_per_minute = IntegerField(_l("Requests per minute"),
                                       validators=[Optional(), NumberRange(min=1)])
    tokens_per_minute = IntegerField(_l("Tokens per minute"),
                                     validators=[Optional(), NumberRange(min=1)])
    monthly_token_cap = IntegerField(_l("Monthly token cap"),
                                     validators=[Optional(), NumberRange(min=1)])


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""

