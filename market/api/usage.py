"""API: usage — model companies report royalty tokens in batches, and any member reads the
organization's usage (tokens and their cost) grouped by day, dataset or API key."""

from __future__ import annotations

import datetime as dt

from flask import Response, json
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from billing import usage
from market.accounts.authz import Principal
from market.api.blueprint import api
from market.db import business_calendar, utcnow
from market.web import db_session

USAGE = ["Usage"]


class UsageEventSchema(Schema):
    id = fields.String(required=True, validate=validate.Length(min=1, max=128), metadata={
        "description": "Chosen by the reporter; each id is accepted once, forever."})
    dataset_id = fields.Integer(required=True, strict=True)
    tokens = fields.Integer(required=True, strict=True, metadata={
        "description": "Tokens the model produced; a negative count rejects the event."})
    occurred_at = fields.AwareDateTime(required=True, default_timezone=dt.timezone.utc,
                                       metadata={"description": "ISO 8601; UTC when no offset "
                                                                "is given."})
    model = fields.String(load_default=None, allow_none=True,
                          validate=validate.Length(max=200))


class UsageBatchSchema(Schema):
    events = fields.List(fields.Nested(UsageEventSchema), required=True,
                         validate=validate.Length(min=1, max=usage.MAX_BATCH))

    def load(self, data, *args, **kwargs):
        """Batches are large and usually well formed: take the plain path when every event is
        exactly what ``UsageEventSchema`` accepts, and let marshmallow name the fields at fault
        otherwise. Both paths give the same result for a well-formed batch."""
        events = _plain_events(data)
        if events is not None:
            return {"events": events}
        return super().load(data, *args, **kwargs)


_EVENT_FIELDS = frozenset({"id", "dataset_id", "tokens", "occurred_at", "model"})


def _plain_events(data) -> list[dict] | None:
    if not isinstance(data, dict) or set(data) != {"events"}:
        return None
    raw = data["events"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= usage.MAX_BATCH:
        return None
    events = []
    for item in raw:
        if not isinstance(item, dict) or not _EVENT_FIELDS >= set(item) >= {
                "id", "dataset_id", "tokens", "occurred_at"}:
            return None
        event_id, dataset_id, tokens = item["id"], item["dataset_id"], item["tokens"]
        model, occurred = item.get("model"), item["occurred_at"]
        if not (isinstance(event_id, str) and 1 <= len(event_id) <= 128
                and type(dataset_id) is int and type(tokens) is int
                and (model is None or isinstance(model, str) and len(model) <= 200)
                and isinstance(occurred, str)):
            return None
        try:
            moment = dt.datetime.fromisoformat(occurred)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        events.append({"id": event_id, "dataset_id": dataset_id, "tokens": tokens,
                       "occurred_at": moment, "model": model})
    return events


class ItemErrorSchema(Schema):
    code = fields.String(metadata={"description": "invalid, not_found, no_royalty_price or "
                                                  "payment_required"})
    field = fields.String()
    message = fields.String()


class UsageOutcomeSchema(Schema):
    id = fields.String()
    status = fields.String(metadata={"description": "accepted, duplicate or rejected"})
    tokens = fields.Integer()
    amount = fields.Dict(allow_none=True, metadata={
        "description": 'What it was charged, {"amount": "0.42", "currency": "CNY"}; for a '
                       'duplicate, what the first was charged.'})
    error = fields.Nested(ItemErrorSchema)


class UsageBatchResultSchema(Schema):
    results = fields.List(fields.Nested(UsageOutcomeSchema),
                          metadata={"description": "One per event, in the batch's order."})
    accepted = fields.Integer()
    duplicates = fields.Integer()
    rejected = fields.Integer()


def _today():
    """Today on the business calendar."""
    return business_calendar(db_session()).day_of(utcnow())


class UsageQuerySchema(Schema):
    start = fields.Date(data_key="from", load_default=None, metadata={
        "description": "First business day, in BUSINESS_TIMEZONE (default: the first of the "
                       "current month)."})
    end = fields.Date(data_key="to", load_default=None, metadata={
        "description": "Last business day, included (default: the end of the month of `from`)."})
    group_by = fields.String(load_default="day", validate=validate.OneOf(usage.GROUPINGS))

    @validates_schema
    def _range(self, data: dict, **kwargs) -> None:
        start, end = usage.default_range(data["start"], data["end"], _today())
        if end < start:
            raise ValidationError("The end of the range comes before its start.", "to")
        if (end - start).days + 1 > usage.MAX_REPORT_DAYS:
            raise ValidationError(f"Ask for at most {usage.MAX_REPORT_DAYS} days.", "to")


class UsageRowSchema(Schema):
    day = fields.String()
    dataset_id = fields.Integer()
    dataset_title = fields.String()
    api_key_id = fields.Integer(allow_none=True)
    key_prefix = fields.String(allow_none=True)
    kind = fields.String()
    paid_by = fields.String()
    tokens = fields.Integer()
    calls = fields.Integer()
    amount = fields.Dict(metadata={"description": '{"amount": "0.42", "currency": "CNY"}'})


class UsageReportSchema(Schema):
    start = fields.Date(data_key="from")
    end = fields.Date(data_key="to")
    group_by = fields.String()
    rows = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "One per group and currency."})
    totals = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "One per currency."})
    by_kind = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "data (metered calls) or royalty, per currency."})
    by_paid_by = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "subscription, wallet, postpaid or free, per currency."})


@api.operation("/usage/events", "POST", summary="Report royalty usage (a batch of events)",
               permission="usage:write", body=UsageBatchSchema,
               response=UsageBatchResultSchema, tags=USAGE, errors=(409, 422))
def report_usage(principal: Principal, body: dict):
    """Up to 1,000 events of tokens produced by a model trained on a dataset, each charged by
    the dataset's royalty rate card on the organization's credit line. Each event id counts once,
    forever (a repeat is ``duplicate``, charged nothing); a rejected event does not hold up the
    others. Events from an earlier month are charged in the current one."""
    result = usage.ingest_royalties(db_session(), organization_id=principal.organization_id,
                                    api_key_id=principal.api_key_id, events=body["events"])
    # Plain data already in the documented shape: dumped as it is (a thousand results).
    return Response(json.dumps(result.to_dict()), mimetype="application/json")


@api.operation("/usage", "GET", summary="The organization's usage and its cost",
               permission="usage:read", query=UsageQuerySchema, response=UsageReportSchema,
               tags=USAGE, errors=(422,))
def get_usage(principal: Principal, query: dict):
    """Tokens, cost and calls of the usage events that occurred in the range (business days, at
    most 366), grouped by ``day``, ``dataset`` or ``key``, with totals by kind and by what paid."""
    start, end = usage.default_range(query["start"], query["end"], _today())
    return usage.usage_report(db_session(), principal.organization_id, start, end,
                              query["group_by"])
