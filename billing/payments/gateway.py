"""Payment gateways: the one place that talks to a card processor.

A gateway speaks in the marketplace's terms: money is an integer of minor units with an ISO
currency beside it, and every call that creates something carries an idempotency key so a retry
after a timeout never charges twice. A declined card is a *result* (an `IntentResult` with status
``failed``), because it is an ordinary outcome of a payment; `GatewayError` is for the gateway
itself failing (network, authentication, a request it rejected).

`CardGateway` is what the marketplace asks of a card processor; `StripeGateway` is the one
that talks to Stripe (or to a server speaking its API, such as localstripe), and the tests have
an in-memory one. No Flask here: the app builds a gateway with `gateway_from_settings(app.config)`
and holds it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import stripe

from billing.models import PaymentStatus, RefundStatus


def payment_tag(order_number: str, payment_id: int) -> str:
    """How the processor's copy of a payment names ours: unique across every installation's
    history (the order number is random), so reconciliation never adopts a stranger's intent."""
    return f"{order_number}/{payment_id}"


class GatewayError(Exception):
    """The gateway could not do what was asked (network, API or configuration error).

    ``outcome_unknown``: no answer came back (a timeout, a dropped connection, a server error),
    so the request may or may not have been carried out; the caller must ask the gateway what
    happened before it tries again. Otherwise the gateway answered that it did nothing.
    """

    def __init__(self, code: str, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.outcome_unknown = outcome_unknown


class InvalidSignature(Exception):
    """A webhook whose signature is missing, malformed or does not match the secret."""


@dataclass(frozen=True)
class IntentResult:
    """A payment attempt as the gateway sees it; `status` is a `PaymentStatus` other than
    ``created``."""

    ref: str
    status: PaymentStatus
    client_secret: str | None
    failure_code: str | None
    failure_message: str | None
    payment_method_ref: str | None
    # What the processor holds, so a caller can check it against what we asked for (None when
    # the processor did not say).
    amount_minor: int | None = None
    currency: str | None = None  # ISO, upper case
    customer_ref: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundResult:
    """A refund; `status` is a `RefundStatus` (a canceled refund is ``failed``)."""

    ref: str
    status: RefundStatus
    amount_minor: int | None = None
    currency: str | None = None  # ISO, upper case
    payment_ref: str | None = None  # the PaymentIntent refunded
    metadata: Mapping[str, str] = field(default_factory=dict)
    failure_reason: str | None = None


@dataclass(frozen=True)
class SetupResult:
    """Saving a card for later: `status` is a `PaymentStatus` other than ``created``.

    The failure fields are set when the card was declined while being saved.
    """

    ref: str
    client_secret: str | None
    status: PaymentStatus
    payment_method_ref: str | None
    failure_code: str | None = None
    failure_message: str | None = None


@runtime_checkable
class CardGateway(Protocol):
    """What the marketplace asks of a card processor. Every method raises `GatewayError` when
    the processor fails (a declined card is a result, not an error)."""

    name: str

    def create_customer(self, *, organization_id: int, name: str, idempotency_key: str) -> str:
        ...

    def create_setup_intent(self, *, customer_ref: str, idempotency_key: str) -> SetupResult:
        ...

    def card_details(self, payment_method_ref: str) -> tuple[str, str]:
        ...

    def attach_payment_method(self, customer_ref: str, payment_method_ref: str) -> None:
        ...

    def create_payment_intent(self, *, amount_minor: int, currency: str, customer_ref: str,
                              payment_method_ref: str, idempotency_key: str, off_session: bool,
                              metadata: dict[str, str]) -> IntentResult:
        ...

    def retrieve_payment_intent(self, ref: str) -> IntentResult:
        ...

    def find_payment_intents(self, *, customer_ref: str, metadata_key: str,
                             metadata_value: str) -> list[IntentResult]:
        ...

    def list_succeeded_intents(self, created_gte: dt.datetime, created_lt: dt.datetime
                               ) -> list[IntentResult]:
        ...

    def refund(self, *, payment_ref: str, amount_minor: int, idempotency_key: str,
               metadata: dict[str, str]) -> RefundResult:
        ...

    def recent_refunds(self, since: int) -> list[RefundResult]:
        ...

    def list_refunds(self, payment_ref: str) -> list[RefundResult]:
        ...

    def parse_webhook(self, payload: bytes, signature_header: str) -> dict:
        ...


def _ref(value: Any) -> str | None:
    """An id, whether Stripe sent the id or an expanded object."""
    if value is None or isinstance(value, str):
        return value
    return value["id"]


def _intent_status(status: str, has_error: bool) -> PaymentStatus:
    match status:
        case "succeeded":
            return PaymentStatus.SUCCEEDED
        case "processing" | "requires_confirmation" | "requires_capture":
            # Nothing for the buyer to do: the charge is on its way (we never capture manually).
            return PaymentStatus.PROCESSING
        case "requires_action":
            return PaymentStatus.REQUIRES_ACTION
        case "canceled":
            # A SetupIntent whose card was declined is left canceled by some servers;
            # the error says it failed rather than that somebody canceled it.
            return PaymentStatus.FAILED if has_error else PaymentStatus.CANCELED
        case "requires_payment_method":
            # After an attempt (a decline, a failed 3-D Secure check) it carries the error and
            # the attempt failed; before any attempt (a new SetupIntent) the buyer has to
            # supply a card with the client secret.
            return PaymentStatus.FAILED if has_error else PaymentStatus.REQUIRES_ACTION
        case _:
            raise GatewayError("unexpected_status", f"unknown intent status {status!r}")


def _error_fields(error: Any) -> tuple[str | None, str | None]:
    """(code, message) of Stripe's last_payment_error / last_setup_error, if any."""
    if not error:
        return None, None
    code = error.get("decline_code") or error.get("code")
    return code, error.get("message")


def _plain(obj: stripe.StripeObject) -> dict[str, Any]:
    """A response as plain dicts and lists (Stripe's objects are not dicts)."""
    return obj.to_dict()


def _intent_result(intent: Mapping[str, Any]) -> IntentResult:
    code, message = _error_fields(intent.get("last_payment_error"))
    return IntentResult(
        ref=intent["id"],
        status=_intent_status(intent["status"], code is not None),
        client_secret=intent.get("client_secret"),
        failure_code=code,
        failure_message=message,
        payment_method_ref=_ref(intent.get("payment_method")),
        amount_minor=intent.get("amount"),
        currency=(intent.get("currency") or "").upper() or None,
        customer_ref=_ref(intent.get("customer")),
        metadata=dict(intent.get("metadata") or {}),
    )


def refund_result(refund: Mapping[str, Any]) -> RefundResult:
    """A refund as the processor describes it (an API answer or an event's object)."""
    return RefundResult(
        ref=refund["id"],
        status=_refund_status(refund.get("status")),
        amount_minor=refund.get("amount"),
        currency=(refund.get("currency") or "").upper() or None,
        payment_ref=_ref(refund.get("payment_intent")),
        metadata=dict(refund.get("metadata") or {}),
        failure_reason=refund.get("failure_reason")
        or ("canceled" if refund.get("status") == "canceled" else None),
    )


def _setup_result(
    intent: Mapping[str, Any], declined: stripe.CardError | None = None
) -> SetupResult:
    code, message = _error_fields(intent.get("last_setup_error"))
    if declined is not None and code is None:
        code, message = _card_error_fields(declined)
    return SetupResult(
        ref=intent["id"],
        client_secret=intent.get("client_secret"),
        status=_intent_status(intent["status"], code is not None),
        payment_method_ref=_ref(intent.get("payment_method")),
        failure_code=code,
        failure_message=message,
    )


def _card_error_fields(exc: stripe.CardError) -> tuple[str, str]:
    error = exc.error
    code = (error.decline_code if error else None) or exc.code or "card_declined"
    return code, exc.user_message or str(exc)


def _refund_status(status: str | None) -> RefundStatus:
    match status:
        case "succeeded":
            return RefundStatus.SUCCEEDED
        case "pending" | "requires_action" | None:
            return RefundStatus.PENDING
        case "failed" | "canceled":
            return RefundStatus.FAILED
        case _:
            raise GatewayError("unexpected_status", f"unknown refund status {status!r}")


_ERROR_KINDS: tuple[tuple[type[stripe.StripeError], str], ...] = (
    (stripe.APIConnectionError, "api_connection_error"),
    (stripe.AuthenticationError, "authentication_error"),
    (stripe.PermissionError, "permission_error"),
    (stripe.RateLimitError, "rate_limit_error"),
    (stripe.IdempotencyError, "idempotency_error"),
    (stripe.InvalidRequestError, "invalid_request_error"),
    (stripe.CardError, "card_declined"),
)


@contextmanager
def _gateway_errors() -> Iterator[None]:
    """Turn Stripe's exceptions into GatewayError; callers that expect a decline catch it first."""
    try:
        yield
    except stripe.StripeError as exc:
        # Stripe's own error code when it gave one, else the kind of error.
        code = exc.code or next(
            (kind for cls, kind in _ERROR_KINDS if isinstance(exc, cls)), "api_error"
        )
        raise GatewayError(code, exc.user_message or str(exc) or code,
                           outcome_unknown=_outcome_unknown(exc)) from exc


def _outcome_unknown(exc: stripe.StripeError) -> bool:
    """Whether the request may have been carried out although no success came back: no answer
    at all, or a server error (5xx), or a clash of idempotency keys. A 4xx answer is a refusal."""
    if isinstance(exc, (stripe.APIConnectionError, stripe.IdempotencyError)):
        return True
    if isinstance(exc, tuple(cls for cls, _kind in _ERROR_KINDS)):
        return False
    return exc.http_status is None or exc.http_status >= 500


class StripeGateway:
    """Card payments through Stripe (or a server speaking its API, such as localstripe)."""

    name = "stripe"

    def __init__(
        self, secret_key: str, *, api_base: str | None = None, webhook_secret: str | None = None
    ) -> None:
        # A client per gateway, never the module-global stripe.api_key: tests and apps stay apart.
        # No retries inside the SDK: a request whose answer was lost is asked about first and
        # only then sent again (a server that ignores Idempotency-Key would carry it out twice).
        self.client = stripe.StripeClient(
            secret_key, base_addresses={"api": api_base} if api_base else None,
            max_network_retries=0,
        )
        self.webhook_secret = webhook_secret

    # -- customers and saved cards ------------------------------------------------------------

    def create_customer(self, *, organization_id: int, name: str, idempotency_key: str) -> str:
        """Create the Stripe customer of an organization and return its id."""
        with _gateway_errors():
            customer = self.client.v1.customers.create(
                params={"name": name, "metadata": {"organization_id": str(organization_id)}},
                options={"idempotency_key": idempotency_key},
            )
        return customer.id

    def create_setup_intent(self, *, customer_ref: str, idempotency_key: str) -> SetupResult:
        """Start saving a card for off-session use; the browser confirms it with client_secret."""
        with _gateway_errors():
            intent = self.client.v1.setup_intents.create(
                params={
                    "customer": customer_ref,
                    "usage": "off_session",
                    "payment_method_types": ["card"],
                },
                options={"idempotency_key": idempotency_key},
            )
        return _setup_result(_plain(intent))

    def confirm_setup_intent(self, ref: str, payment_method_ref: str) -> SetupResult:
        """Confirm a SetupIntent with a card, as Stripe.js does in the browser.

        A declined card is a result with status ``failed``, not an exception.
        """
        with _gateway_errors():
            try:
                intent = self.client.v1.setup_intents.confirm(
                    ref, params={"payment_method": payment_method_ref}
                )
            except stripe.CardError as declined:
                intent = self.client.v1.setup_intents.retrieve(ref)
                return _setup_result(_plain(intent), declined)
        return _setup_result(_plain(intent))

    def card_details(self, payment_method_ref: str) -> tuple[str, str]:
        """(brand, last4) of a saved card, for showing it to the buyer."""
        with _gateway_errors():
            method = self.client.v1.payment_methods.retrieve(payment_method_ref)
        card = _plain(method).get("card")
        if not card:
            raise GatewayError("not_a_card", f"payment method {payment_method_ref} is not a card")
        return card["brand"], card["last4"]

    def attach_payment_method(self, customer_ref: str, payment_method_ref: str) -> None:
        """Attach a card to a customer so renewals can charge it off-session.

        Stripe attaches the card itself when a SetupIntent succeeds; calling this again for the
        same customer is harmless. A card refused at attachment raises GatewayError
        (code ``card_declined``): there is no payment to record a result on.
        """
        with _gateway_errors():
            method = self.client.v1.payment_methods.retrieve(payment_method_ref)
            if _ref(_plain(method).get("customer")) == customer_ref:
                return
            self.client.v1.payment_methods.attach(
                payment_method_ref, params={"customer": customer_ref}
            )

    # -- payments -----------------------------------------------------------------------------

    def create_payment_intent(
        self,
        *,
        amount_minor: int,
        currency: str,
        customer_ref: str,
        payment_method_ref: str,
        idempotency_key: str,
        off_session: bool,
        metadata: dict[str, str],
    ) -> IntentResult:
        """Create and confirm a card payment in one call.

        ``off_session`` is for renewals charged while the buyer is away. The metadata should
        name our payment, so `find_payment_intent` can recover the intent if we crash before
        storing its id.
        """
        params: dict[str, Any] = {
            "amount": amount_minor,
            "currency": currency.lower(),
            "customer": customer_ref,
            "payment_method": payment_method_ref,
            # Cards only: with Stripe's automatic payment methods a server-side confirm would
            # demand a return_url for redirect-based methods we do not offer.
            "payment_method_types": ["card"],
            "confirm": True,
            "metadata": dict(metadata),
        }
        if off_session:
            params["off_session"] = True
        with _gateway_errors():
            try:
                intent = self.client.v1.payment_intents.create(
                    params=params, options={"idempotency_key": idempotency_key}
                )
            except stripe.CardError as declined:
                return self._declined_intent(declined)
        return _intent_result(_plain(intent))

    def _declined_intent(self, declined: stripe.CardError) -> IntentResult:
        """The intent behind a CardError, read back so its id and error are recorded."""
        error = declined.error
        intent_ref = _ref(error.payment_intent) if error and error.payment_intent else None
        if intent_ref is None and error and error.charge:
            # Stripe names the intent in the error; localstripe names only the charge.
            charge = self.client.v1.charges.retrieve(_ref(error.charge))  # type: ignore[arg-type]
            intent_ref = _ref(_plain(charge).get("payment_intent"))
        if intent_ref is None:
            raise GatewayError(
                declined.code or "card_declined", "card declined and no payment intent was named"
            ) from declined
        result = _intent_result(_plain(self.client.v1.payment_intents.retrieve(intent_ref)))
        if result.failure_code is None:
            code, message = _card_error_fields(declined)
            result = IntentResult(
                ref=result.ref,
                status=PaymentStatus.FAILED,
                client_secret=result.client_secret,
                failure_code=code,
                failure_message=message,
                payment_method_ref=result.payment_method_ref,
            )
        return result

    def retrieve_payment_intent(self, ref: str) -> IntentResult:
        """The current state of a payment intent."""
        with _gateway_errors():
            intent = self.client.v1.payment_intents.retrieve(ref)
        return _intent_result(_plain(intent))

    def find_payment_intent(
        self, *, customer_ref: str, metadata_key: str, metadata_value: str
    ) -> IntentResult | None:
        """The customer's newest payment intent whose metadata has key = value, or None.

        Listing is used rather than the Search API: search results lag behind writes by up to
        a minute, which is exactly the window reconciliation looks at.
        """
        matches = self.find_payment_intents(
            customer_ref=customer_ref, metadata_key=metadata_key, metadata_value=metadata_value
        )
        return matches[0] if matches else None

    def find_payment_intents(
        self, *, customer_ref: str, metadata_key: str, metadata_value: str
    ) -> list[IntentResult]:
        """Every payment intent of the customer whose metadata has key = value, newest first.

        More than one means somebody else created an intent naming ours: the caller tells
        them apart by what it asked for (amount, currency).
        """
        with _gateway_errors():
            matches = [
                intent
                for intent in map(_plain, self._customer_intents(customer_ref))
                if _ref(intent.get("customer")) == customer_ref
                and (intent.get("metadata") or {}).get(metadata_key) == metadata_value
            ]
        matches.sort(key=lambda intent: intent["created"], reverse=True)
        return [_intent_result(intent) for intent in matches]

    def list_succeeded_intents(self, created_gte: dt.datetime, created_lt: dt.datetime
                               ) -> list[IntentResult]:
        """Every succeeded payment intent created in [created_gte, created_lt), every page of
        them (aware instants; the processor counts whole seconds, so the window is widened to
        them: its start rounded down, its end up).

        The processor is asked for that window only (``created[gte]``, ``created[lt]``).
        localstripe cannot filter payment intents by creation ("Unexpected created"); there
        every intent is listed, and the window is applied here as well.
        """
        window = {"gte": math.floor(created_gte.timestamp()),
                  "lt": math.ceil(created_lt.timestamp())}
        with _gateway_errors():
            found = [intent for intent in map(_plain, self._intents_created(window))
                     if intent.get("status") == "succeeded"
                     and window["gte"] <= intent.get("created", 0) < window["lt"]]
        return [_intent_result(intent) for intent in found]

    def _intents_created(self, window: dict[str, int]) -> Iterator[Any]:
        try:
            page = self.client.v1.payment_intents.list(params={"created": window, "limit": 100})
        except stripe.InvalidRequestError as exc:
            if "created" not in (exc.user_message or ""):
                raise
            page = self.client.v1.payment_intents.list(params={"limit": 100})
        yield from page.auto_paging_iter()

    def _customer_intents(self, customer_ref: str) -> Iterator[Any]:
        try:
            page = self.client.v1.payment_intents.list(
                params={"customer": customer_ref, "limit": 100}
            )
        except stripe.InvalidRequestError as exc:
            # localstripe cannot filter payment intents by customer ("Unexpected customer");
            # Stripe can. There, list them all and let the caller filter.
            if "customer" not in (exc.user_message or ""):
                raise
            page = self.client.v1.payment_intents.list(params={"limit": 100})
        yield from page.auto_paging_iter()

    # -- refunds ------------------------------------------------------------------------------

    def refund(
        self,
        *,
        payment_ref: str,
        amount_minor: int,
        idempotency_key: str,
        metadata: dict[str, str],
    ) -> RefundResult:
        """Refund part or all of a succeeded payment intent."""
        if amount_minor <= 0:
            raise ValueError("a refund is a positive amount")
        with _gateway_errors():
            refund = self.client.v1.refunds.create(
                params={
                    "payment_intent": payment_ref,
                    "amount": amount_minor,
                    "metadata": dict(metadata),
                },
                options={"idempotency_key": idempotency_key},
            )
        return refund_result(_plain(refund))

    def recent_refunds(self, since: int) -> list[RefundResult]:
        """Every refund at the processor created at or after ``since`` (unix time), newest
        first, each naming its payment intent: how refunds made elsewhere are found."""
        found: list[RefundResult] = []
        with _gateway_errors():
            page = self.client.v1.refunds.list(params={"limit": 100})
            for refund in map(_plain, page.auto_paging_iter()):
                if refund.get("created", 0) < since:
                    break  # listed newest first
                result = refund_result(refund)
                if result.payment_ref is None and refund.get("charge"):
                    # localstripe names only the charge of a refund made by charge.
                    charge = _plain(self.client.v1.charges.retrieve(_ref(refund["charge"])))
                    intent = _ref(charge.get("payment_intent"))
                    result = _with_payment(result, intent) if intent else result
                found.append(result)
        return found

    def list_refunds(self, payment_ref: str) -> list[RefundResult]:
        """Every refund of a payment intent, ours and any made elsewhere (the dashboard)."""
        with _gateway_errors():
            page = self.client.v1.refunds.list(params={"payment_intent": payment_ref,
                                                       "limit": 100})
            found = [refund_result(_plain(refund)) for refund in page.auto_paging_iter()]
        # localstripe names the intent only on refunds made through it; the list is the intent's.
        return [r if r.payment_ref else _with_payment(r, payment_ref) for r in found]

    # -- webhooks -----------------------------------------------------------------------------

    def parse_webhook(self, payload: bytes, signature_header: str) -> dict:
        """Verify a webhook's signature on the raw body and return the event as a plain dict.

        Raises InvalidSignature when the signature is missing, malformed, stale or wrong, or
        when no webhook secret is configured (an unverifiable event is never trusted).
        """
        if not self.webhook_secret:
            raise InvalidSignature("no webhook secret is configured")
        try:
            self.client.construct_event(payload, signature_header, self.webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature(str(exc)) from exc
        except (UnicodeDecodeError, ValueError) as exc:
            # A body that is not JSON cannot have been signed by Stripe.
            raise InvalidSignature(f"unreadable webhook body: {exc}") from exc
        event = json.loads(payload)
        if not isinstance(event, dict) or "id" not in event or "type" not in event:
            raise InvalidSignature("the signed body is not an event")
        return event


def _with_payment(refund: RefundResult, payment_ref: str) -> RefundResult:
    return RefundResult(ref=refund.ref, status=refund.status, amount_minor=refund.amount_minor,
                        currency=refund.currency, payment_ref=payment_ref,
                        metadata=refund.metadata, failure_reason=refund.failure_reason)


def gateway_from_settings(settings: Mapping[str, Any]) -> StripeGateway | None:
    """The card gateway the settings ask for, or None when only bank transfer is offered."""
    secret_key = settings.get("STRIPE_SECRET_KEY") or ""
    if not secret_key:
        return None
    return StripeGateway(
        secret_key,
        api_base=settings.get("STRIPE_API_BASE") or None,
        webhook_secret=settings.get("STRIPE_WEBHOOK_SECRET") or None,
    )
