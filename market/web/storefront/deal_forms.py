"""Forms of the subscription and custom-data pages (Flask-WTF: each carries a CSRF token)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    DateField, DecimalField, IntegerField, RadioField, SelectField, StringField, TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from billing.deals import DIMENSIONS, MAX_TITLE
from market.web.boundary import BoundedForm
from market.catalog.taxonomy import MODALITIES, SECTORS
from market.web.storefront.forms import choices, payment_method_choices

DIMENSION_LABELS = {
    "structural_integrity": _l("Structural integrity"),
    "content_diversity": _l("Content diversity"),
    "annotation_accuracy": _l("Annotation accuracy"),
    "model_adaptability": _l("Model adaptability"),
    "overall": _l("Overall score"),
}


def _score_field() -> IntegerField:
    return IntegerField(validators=[Optional(), NumberRange(min=0, max=100)])


def _scores(form, prefix: str) -> dict[str, int]:
    """The filled-in minimum scores of a form's ``<prefix>_<dimension>`` fields."""
    return {d: getattr(form, f"{prefix}_{d}").data for d in DIMENSIONS
            if getattr(form, f"{prefix}_{d}").data is not None}


def _label_scores(form, prefix: str) -> None:
    for d in DIMENSIONS:
        getattr(form, f"{prefix}_{d}").label.text = DIMENSION_LABELS[d]


class SubscribeForm(BoundedForm):
    """The dataset page's subscribe form: a plan and how its periods are paid."""

    offer_id = IntegerField(_l("Plan"), validators=[DataRequired()])
    payment_method = RadioField(_l("How you will pay"), default="bank_transfer",
                                validators=[DataRequired()])

    def __init__(self, *args, card_enabled: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.payment_method.choices = payment_method_choices(card_enabled)


class DemandForm(BoundedForm):
    title = StringField(_l("Title"), validators=[DataRequired(), Length(max=MAX_TITLE)])
    description = TextAreaField(_l("Description"), validators=[Length(max=20_000)])
    sector = SelectField(_l("Sector"), validators=[DataRequired()])
    modality = SelectField(_l("Modality"), validators=[DataRequired()])
    volume = StringField(_l("Volume (e.g. 50,000 records)"),
                         validators=[DataRequired(), Length(max=200)])
    budget_amount = DecimalField(_l("Budget"), places=2,
                                 validators=[InputRequired(), NumberRange(min=0)])
    currency = StringField(_l("Currency"), default="CNY",
                           validators=[DataRequired(), Length(min=3, max=3)])
    deadline = DateField(_l("Deadline"), validators=[DataRequired()])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sector.choices = choices(SECTORS)
        self.modality.choices = choices(MODALITIES)
        _label_scores(self, "threshold")

    def thresholds(self) -> dict[str, int]:
        return _scores(self, "threshold")

    def threshold_fields(self):
        return [getattr(self, f"threshold_{d}") for d in DIMENSIONS]


class QuoteForm(BoundedForm):
    """A supplier's quote on one demand (one form per demand on the page: prefixed)."""

    dataset_id = SelectField(_l("Dataset to deliver a version of"), coerce=int,
                             validators=[DataRequired()])
    deposit = DecimalField(_l("Deposit"), places=2, validators=[Optional(), NumberRange(min=0)])
    delivery = DecimalField(_l("On delivery"), places=2,
                            validators=[Optional(), NumberRange(min=0)])
    acceptance = DecimalField(_l("On acceptance"), places=2,
                              validators=[InputRequired(), NumberRange(min=0)])
    note = TextAreaField(_l("Note (optional)"), validators=[Length(max=5_000)])

    def __init__(self, *args, datasets=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.dataset_id.choices = [SelectChoice(d.id, title) for d, title in datasets]
        _label_scores(self, "criterion")

    def milestones(self, currency: str) -> list[dict]:
        amounts = (("deposit", self.deposit.data), ("delivery", self.delivery.data),
                   ("acceptance", self.acceptance.data))
        return [{"kind": kind, "amount": {"amount": format(amount, "f"), "currency": currency}}
                for kind, amount in amounts if amount is not None and (amount or
                                                                       kind == "acceptance")]

    def criteria(self) -> dict[str, int]:
        return _scores(self, "criterion")

    def criterion_fields(self):
        return [getattr(self, f"criterion_{d}") for d in DIMENSIONS]


for _dimension in DIMENSIONS:
    setattr(DemandForm, f"threshold_{_dimension}", _score_field())
    setattr(QuoteForm, f"criterion_{_dimension}", _score_field())


class AcceptQuoteForm(BoundedForm):
    payment_method = RadioField(_l("How you will pay the milestones"), default="bank_transfer",
                                validators=[DataRequired()])

    def __init__(self, *args, card_enabled: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.payment_method.choices = payment_method_choices(card_enabled)


class DeliveryForm(BoundedForm):
    version = IntegerField(_l("Version number"), validators=[DataRequired(),
                                                             NumberRange(min=1)])


class AcceptDeliveryForm(BoundedForm):
    waiver_reason = TextAreaField(_l("Reason for waiving the failed criteria (needed only when "
                                     "a criterion failed)"), validators=[Length(max=2_000)])


class DisputeForm(BoundedForm):
    reason = TextAreaField(_l("Reason"), validators=[DataRequired(), Length(max=2_000)])


class CancelDemandForm(BoundedForm):
    reason = TextAreaField(_l("Reason for cancelling"), validators=[DataRequired(),
                                                                    Length(max=2_000)])


class WithdrawQuoteForm(BoundedForm):
    reason = TextAreaField(_l("Reason (optional)"), validators=[Length(max=2_000)])
