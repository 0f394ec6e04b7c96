"""An in-memory card processor implementing `CardGateway`, for tests that need a processor's
answers without a server: payments succeed at once, refunds are accepted, and every window
reconciliation asks for is recorded (``windows``). Set ``failure`` to a `GatewayError` to have
every call fail as a processor outage would.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Mapping

from billing.payments.gateway import (
    GatewayError, IntentResult, InvalidSignature, RefundResult, SetupResult,
)

SIGNATURE = "fake-signature"


class FakeGateway:
    name = "fake"

    def __init__(self) -> None:
        self.failure: GatewayError | None = None
        self.intents: dict[str, tuple[IntentResult, dt.datetime]] = {}
        self.refunds: list[tuple[RefundResult, dt.datetime]] = []
        self.windows: list[tuple[dt.datetime, dt.datetime]] = []
        self._ids = itertools.count(1)

    def _answer(self) -> None:
        if self.failure is not None:
            raise self.failure

    def add_intent(self, *, amount_minor: int, currency: str, metadata: Mapping[str, str],
                   created: dt.datetime, status: str = "succeeded",
                   customer_ref: str | None = None) -> IntentResult:
        """An intent as the processor holds it, created at ``created``."""
        intent = IntentResult(ref=f"pi_fake_{next(self._ids)}", status=status,
                              client_secret=None, failure_code=None, failure_message=None,
                              payment_method_ref="pm_fake", amount_minor=amount_minor,
                              currency=currency.upper(), customer_ref=customer_ref,
                              metadata=dict(metadata))
        self.intents[intent.ref] = (intent, created)
        return intent

    def create_customer(self, *, organization_id: int, name: str, idempotency_key: str) -> str:
        self._answer()
        return f"cus_{organization_id}"

    def create_setup_intent(self, *, customer_ref: str, idempotency_key: str) -> SetupResult:
        self._answer()
        return SetupResult(ref=f"seti_{idempotency_key}", client_secret="seti_secret",
                           status="requires_action", payment_method_ref=None)

    def card_details(self, payment_method_ref: str) -> tuple[str, str]:
        self._answer()
        return "visa", "4242"

    def attach_payment_method(self, customer_ref: str, payment_method_ref: str) -> None:
        self._answer()

    def create_payment_intent(self, *, amount_minor: int, currency: str, customer_ref: str,
                              payment_method_ref: str, idempotency_key: str, off_session: bool,
                              metadata: dict[str, str]) -> IntentResult:
        self._answer()
        return self.add_intent(amount_minor=amount_minor, currency=currency, metadata=metadata,
                               created=dt.datetime.now(dt.timezone.utc),
                               customer_ref=customer_ref)

    def retrieve_payment_intent(self, ref: str) -> IntentResult:
        self._answer()
        if ref not in self.intents:
            raise GatewayError("resource_missing", f"no such payment intent {ref}")
        return self.intents[ref][0]

    def find_payment_intents(self, *, customer_ref: str, metadata_key: str,
                             metadata_value: str) -> list[IntentResult]:
        self._answer()
        found = [(created, intent) for intent, created in self.intents.values()
                 if intent.customer_ref == customer_ref
                 and intent.metadata.get(metadata_key) == metadata_value]
        return [intent for _, intent in sorted(found, key=lambda pair: pair[0], reverse=True)]

    def list_succeeded_intents(self, created_gte: dt.datetime, created_lt: dt.datetime
                               ) -> list[IntentResult]:
        self.windows.append((created_gte, created_lt))
        self._answer()
        return [intent for intent, created in self.intents.values()
                if intent.status == "succeeded" and created_gte <= created < created_lt]

    def refund(self, *, payment_ref: str, amount_minor: int, idempotency_key: str,
               metadata: dict[str, str]) -> RefundResult:
        self._answer()
        intent = self.retrieve_payment_intent(payment_ref)
        refund = RefundResult(ref=f"re_fake_{next(self._ids)}", status="succeeded",
                              amount_minor=amount_minor, currency=intent.currency,
                              payment_ref=payment_ref, metadata=dict(metadata))
        self.refunds.append((refund, dt.datetime.now(dt.timezone.utc)))
        return refund

    def recent_refunds(self, since: int) -> list[RefundResult]:
        self._answer()
        return [refund for refund, created in reversed(self.refunds)
                if created.timestamp() >= since]

    def list_refunds(self, payment_ref: str) -> list[RefundResult]:
        self._answer()
        return [refund for refund, _ in self.refunds if refund.payment_ref == payment_ref]

    def parse_webhook(self, payload: bytes, signature_header: str) -> dict:
        if signature_header != SIGNATURE:
            raise InvalidSignature("not signed by the fake processor")
        return json.loads(payload)
