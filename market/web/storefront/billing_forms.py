"""Forms of the buying pages and the finance console (Flask-WTF: each carries a CSRF token)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import (
    DateField, DecimalField, HiddenField, IntegerField, RadioField, SelectField, StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from billing.orders import MAX_QUANTITY, MAX_TOKEN_PACK_MILLIONS
from market.web.boundary import BoundedForm
from market.web.storefront.forms import optional_int, payment_method_choices

def _budget_line_choices(budget_lines) -> list[SelectChoice]:
    return [SelectChoice("", _l("No budget line"))] + [
        SelectChoice(str(line_id), label) for line_id, label in budget_lines]


def _budget_line_field() -> SelectField:
    # The service decides whether a line is required (the organization has a budget for the
    # year and currency) and whether the budget asks for a purchase-order number.
    return SelectField(_l("Budget line"), coerce=optional_int, validate_choice=False)


def _purchase_order_field() -> StringField:
    return StringField(_l("Purchase-order number"), validators=[Optional(), Length(max=64)])


class CartItemForm(BoundedForm):
    """Adds a package to the cart, or sets the quantity of one already in it."""

    offer_id = IntegerField(_l("Offer"), validators=[DataRequired()])
    quantity = IntegerField(_l("Quantity"), default=1,
                            validators=[DataRequired(), NumberRange(min=1, max=MAX_QUANTITY)])


class CheckoutForm(BoundedForm):
    payment_method = RadioField(_l("How you will pay"), default="bank_transfer",
                                validators=[DataRequired()])
    budget_line_id = _budget_line_field()
    purchase_order_number = _purchase_order_field()
    note = TextAreaField(_l("Note for the order (optional)"), validators=[Length(max=500)])

    def __init__(self, *args, card_enabled: bool = False, budget_lines=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.payment_method.choices = payment_method_choices(card_enabled)
        self.budget_line_id.choices = _budget_line_choices(budget_lines)


class SubscriptionCheckoutForm(BoundedForm):
    """The subscription confirmation page's form: the plan, how its periods are paid, and the
    budget line (and purchase-order number) its first order is charged to."""

    offer_id = IntegerField(_l("Plan"), validators=[DataRequired()])
    # Tells this form's post from the dataset page's (which sends no budget line).
    confirmed = HiddenField(default="1")
    payment_method = RadioField(_l("How you will pay"), default="bank_transfer",
                                validators=[DataRequired()])
    budget_line_id = _budget_line_field()
    purchase_order_number = _purchase_order_field()

    def __init__(self, *args, card_enabled: bool = False, budget_lines=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.payment_method.choices = payment_method_choices(card_enabled)
        self.budget_line_id.choices = _budget_line_choices(budget_lines)


class TokenPackForm(BoundedForm):
    millions = IntegerField(_l("Millions of tokens"), default=1, validators=[
        DataRequired(), NumberRange(min=1, max=MAX_TOKEN_PACK_MILLIONS)])
    # The dataset page posts its own dataset; the holdings page offers the datasets held.
    dataset_id = SelectField(_l("For"), coerce=optional_int, validate_choice=False)
    payment_method = RadioField(_l("How you will pay"), default="bank_transfer",
                                validators=[DataRequired()])
    budget_line_id = _budget_line_field()
    purchase_order_number = _purchase_order_field()

    def __init__(self, *args, card_enabled: bool = False, datasets=(), budget_lines=(),
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.payment_method.choices = payment_method_choices(card_enabled)
        self.budget_line_id.choices = _budget_line_choices(budget_lines)
        self.dataset_id.choices = [SelectChoice("", _l("Any dataset (platform-wide)"))] + [
            SelectChoice(str(d.id), title) for d, title in datasets]


class ReceiptForm(BoundedForm):
    """Money received by bank transfer against one invoice (one form per invoice: prefixed)."""

    amount = DecimalField(_l("Amount received"), places=2, validators=[InputRequired()])
    currency = StringField(_l("Currency"), validators=[DataRequired(), Length(min=3, max=3)])
    received_on = DateField(_l("Received on"), validators=[DataRequired()])
    bank_reference = StringField(_l("Bank reference"), validators=[Length(max=100)])


class ReferenceLookupForm(BoundedForm):
    """Finance types the payment reference written on a transfer (a GET form: no CSRF)."""

    class Meta:
        csrf = False

    payment_reference = StringField(_l("Payment reference"),
                                    validators=[DataRequired(), Length(max=32)])


class RefundForm(BoundedForm):
    """A refund of one payment (one form per payment: prefixed)."""

    amount = DecimalField(_l("Amount (empty: all that remains)"), places=2,
                          validators=[Optional(), NumberRange(min=0)])
    reason = StringField(_l("Reason"), validators=[DataRequired(), Length(max=500)])
    bank_reference = StringField(_l("Bank reference of the transfer back (bank transfers)"),
                                 validators=[Length(max=100)])
