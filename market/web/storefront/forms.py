"""Storefront forms (Flask-WTF: every form carries a CSRF token)."""

from __future__ import annotations

from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField, FileRequired
from wtforms import (
    DecimalField, EmailField, FieldList, Form, FormField, IntegerField, PasswordField,
    SelectField, SelectMultipleField, StringField, TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from market.accounts.authz import SCOPES
from market.web.boundary import BoundedForm
from market.catalog.taxonomy import (
    AI_STAGES, CHAIN_ROLES, LANGUAGES, LICENCES, MODALITIES, PERSONAL_INFORMATION, SECTORS,
    SENSITIVITY,
)

ORG_ROLE_LABELS = {
    "buyer": _l("Buyer"), "supplier": _l("Supplier"), "processor": _l("Processor / annotator"),
    "exchange": _l("Data exchange"), "channel": _l("Channel partner"), "platform": _l("Platform"),
}
PAYMENT_METHOD_LABELS = {"bank_transfer": _l("Bank transfer"), "card": _l("Card")}
# Exchanges and the platform are set up by the operator, not by self-registration.
SELF_SERVICE_ROLES = ("buyer", "supplier", "processor", "channel")


class CheckboxList(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class RegisterForm(BoundedForm):
    name = StringField(_l("Your name"), validators=[DataRequired(), Length(max=200)])
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Email(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])
    organization_name = StringField(_l("Organization"), validators=[DataRequired(),
                                                                   Length(max=200)])
    roles = CheckboxList(_l("What your organization does here"),
                         choices=[SelectChoice(r, ORG_ROLE_LABELS[r]) for r in SELF_SERVICE_ROLES],
                         validators=[DataRequired()])


class LoginForm(BoundedForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Length(max=254)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


MEMBER_ROLE_LABELS = {"owner": _l("Owner"), "member": _l("Member"), "finance": _l("Finance"),
                      "reviewer": _l("Reviewer")}


class InviteForm(BoundedForm):
    email = EmailField(_l("E-mail"), validators=[DataRequired(), Email(), Length(max=254)])
    role = SelectField(_l("Role"), choices=[SelectChoice(r, label)
                                            for r, label in MEMBER_ROLE_LABELS.items()],
                       default="member")


class PasswordChangeForm(BoundedForm):
    current_password = PasswordField(_l("Current password"),
                                     validators=[DataRequired(), Length(max=200)])
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=200)])


class ApiKeyForm(BoundedForm):
    name = StringField(_l("Name"), validators=[DataRequired(), Length(max=100)])
    scopes = CheckboxList(_l("Scopes"), choices=[SelectChoice(s, s) for s in SCOPES],
                          validators=[DataRequired()])
    requests_per_minute = IntegerField(_l("Requests per minute"),
                                       validators=[Optional(), NumberRange(min=1)])
    tokens_per_minute = IntegerField(_l("Tokens per minute"),
                                     validators=[Optional(), NumberRange(min=1)])
    monthly_token_cap = IntegerField(_l("Monthly token cap"),
                                     validators=[Optional(), NumberRange(min=1)])


class ActionForm(BoundedForm):
    """A button that changes something: only its CSRF token."""



# Catalogue ---------------------------------------------------------------------------------------

def choices(vocabulary) -> list[SelectChoice]:
    """A vocabulary's terms as a select's choices, labelled in the page's language."""
    return [SelectChoice(code, term.label(str(get_locale()))) for code, term in vocabulary.items()]


def payment_method_choices(card_enabled: bool) -> list[SelectChoice]:
    methods = ("bank_transfer", "card") if card_enabled else ("bank_transfer",)
    return [SelectChoice(m, PAYMENT_METHOD_LABELS[m]) for m in methods]


def optional_int(value):
    """A select whose empty choice means "none" (a platform-wide token pack)."""
    if value in (None, "", "None"):
        return None
    return int(value)


class DatasetForm(BoundedForm):
    title_zh = StringField(_l("Title (Chinese)"), validators=[DataRequired(), Length(max=200)])
    title_en = StringField(_l("Title (English)"), validators=[DataRequired(), Length(max=200)])
    summary_zh = StringField(_l("Summary (Chinese)"), validators=[Length(max=500)])
    summary_en = StringField(_l("Summary (English)"), validators=[Length(max=500)])
    description_zh = TextAreaField(_l("Description (Chinese)"), validators=[Length(max=20000)])
    description_en = TextAreaField(_l("Description (English)"), validators=[Length(max=20000)])
    sector = SelectField(_l("Sector"))
    modality = SelectField(_l("Modality"))
    ai_stage = SelectField(_l("AI stage"))
    languages = CheckboxList(_l("Languages"))
    licence = SelectField(_l("Licence"))
    personal_information = SelectField(_l("Personal information"))
    sensitivity = SelectField(_l("Sensitivity"))
    rights_holding = StringField(_l("Holder of the data resource holding right"),
                                 validators=[Length(max=200)])
    rights_usage = StringField(_l("Holder of the data processing and usage right"),
                               validators=[Length(max=200)])
    rights_operation = StringField(_l("Holder of the data product operation right"),
                                   validators=[Length(max=200)])
    required_fields = StringField(_l("Fields every record must have (comma-separated)"),
                                  validators=[Length(max=1000)])
    label_field = StringField(_l("Label field, if any"), validators=[Length(max=100)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sector.choices = choices(SECTORS)
        self.modality.choices = choices(MODALITIES)
        self.ai_stage.choices = choices(AI_STAGES)
        self.languages.choices = choices(LANGUAGES)
        self.licence.choices = choices(LICENCES)
        self.personal_information.choices = choices(PERSONAL_INFORMATION)
        self.sensitivity.choices = choices(SENSITIVITY)

    def values(self) -> dict:
        rights = {right: getattr(self, f"rights_{right}").data.strip()
                  for right in ("holding", "usage", "operation")
                  if getattr(self, f"rights_{right}").data.strip()}
        required = [f.strip() for f in (self.required_fields.data or "").split(",") if f.strip()]
        return {
            "title_zh": self.title_zh.data, "title_en": self.title_en.data,
            "summary_zh": self.summary_zh.data or "", "summary_en": self.summary_en.data or "",
            "description_zh": self.description_zh.data or "",
            "description_en": self.description_en.data or "",
            "sector": self.sector.data, "modality": self.modality.data,
            "ai_stage": self.ai_stage.data, "languages": self.languages.data or [],
            "licence": self.licence.data, "personal_information": self.personal_information.data,
            "sensitivity": self.sensitivity.data, "rights": rights,
            "required_fields": required, "label_field": self.label_field.data or None,
        }


class UploadForm(BoundedForm):
    file = FileField(_l("JSONL or CSV file"), validators=[FileRequired()])
    notes = StringField(_l("Notes on this version"), validators=[Length(max=2000)])


class ShareRow(Form):
    organization_id = IntegerField(_l("Organization ID"), validators=[Optional()])
    # Empty rows are skipped; the service names an unknown role in a filled one.
    role = SelectField(_l("Role"), choices=[SelectChoice(c, c) for c in CHAIN_ROLES],
                       validate_choice=False)
    share_percent = DecimalField(_l("Share (%%)"), places=2,
                                 validators=[Optional(), NumberRange(min=0, max=100)])


class SupplyChainForm(BoundedForm):
    rows = FieldList(FormField(ShareRow), min_entries=5, max_entries=20)
    note = StringField(_l("Why this change"), validators=[Length(max=500)])


class SubmitListingForm(BoundedForm):
    version = SelectField(_l("Version"), coerce=int)
    exchange_id = SelectField(_l("Exchange"), coerce=int)


class RejectForm(BoundedForm):
    reasons = CheckboxList(_l("Reasons"), validators=[DataRequired()])
    text = TextAreaField(_l("What the supplier should correct"),
                         validators=[DataRequired(), Length(max=4000)])


class NoteForm(BoundedForm):
    text = TextAreaField(_l("Note"), validators=[Length(max=4000)])


class OfferForm(BoundedForm):
    """One form for the common offers; each kind reads the fields it needs."""

    kind = SelectField(_l("Commercial model"), choices=[
        SelectChoice("subscription", _l("Subscription")),
        SelectChoice("mall_package", _l("Data package (one-off)")),
        SelectChoice("metered", _l("Metered API (per million tokens)"))])
    code = StringField(_l("Offer code"), validators=[DataRequired(), Length(max=64)])
    price = DecimalField(_l("Price (CNY)"), places=2, validators=[Optional()])
    period = SelectField(_l("Period"), choices=[SelectChoice("month", _l("month")),
                                                SelectChoice("quarter", _l("quarter")),
                                                SelectChoice("year", _l("year"))])
    included_tokens = IntegerField(_l("Included tokens per period"), validators=[Optional()])
    per_million = DecimalField(_l("Price per million tokens (overage or metered)"),
                               validators=[Optional()])
    licence_months = IntegerField(_l("Licence months (empty: perpetual)"),
                                  validators=[Optional()])
    api_tokens = IntegerField(_l("API tokens included"), validators=[Optional()])

    def terms(self, currency: str) -> dict:
        def money(value):
            return {"amount": str(value), "currency": currency} if value is not None else None

        if self.kind.data == "subscription":
            return {"kind": "subscription", "code": self.code.data, "period": self.period.data,
                    "price": money(self.price.data),
                    "included_tokens": self.included_tokens.data or 0,
                    "overage_per_million": money(self.per_million.data)}
        if self.kind.data == "mall_package":
            return {"kind": "mall_package", "code": self.code.data,
                    "price": money(self.price.data), "licence_months": self.licence_months.data,
                    "download": True, "api_tokens": self.api_tokens.data or 0}
        return {"kind": "metered", "code": self.code.data, "mode": "graduated", "tiers": [
            {"from_tokens": 0, "up_to": None, "price_per_million": money(self.per_million.data)}]}
