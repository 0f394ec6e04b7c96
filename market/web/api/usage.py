"""API: usage — model companies report royalty tokens in batches, and any member reads the
organization's usage (tokens and their cost) grouped by day, dataset or API key."""

from __future__ import annotations

import datetime as dt

from flask import Response, json
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from billing.metering import usage
from market.accounts.authz import Principal
from market.web.api.blueprint import api
from market.core.db import business_calendar, utcnow
from market.core.inputs import INT32_MAX, INT64_MAX, text_problem
from market.web.http import db_session

USAGE = ["Usage"]


MAX_DATASET_ID = INT32_MAX  # usage_events.dataset_id is an INTEGER
MAX_EVENT_TOKENS = INT64_MAX  # usage_events.tokens is a BIGINT


def _storable(value: str) -> None:
    problem = text_problem(value)
    if problem is not None:
        raise ValidationError(problem)


def _in_utc(moment: dt.datetime) -> None:
    try:
        moment.astimezone(dt.timezone.utc)
    except OverflowError:
        raise ValidationError("Not a time that can be given in UTC.") from None


class UsageEventSchema(Schema):
    id = fields.String(required=True, validate=[validate.Length(min=1, max=128), _storable],
                       metadata={"description": "Chosen by the reporter; each id is accepted "
                                                "once, forever."})
    dataset_id = fields.Integer(required=True, strict=True,
                                validate=validate.Range(min=1, max=MAX_DATASET_ID))
    tokens = fields.Integer(required=True, strict=True, validate=validate.Range(
        max=MAX_EVENT_TOKENS), metadata={
        "description": "Tokens the model produced; a negative count rejects the event."})
    occurred_at = fields.AwareDateTime(required=True, default_timezone=dt.timezone.utc,
                                       validate=_in_utc,
                                       metadata={"description": "ISO 8601; UTC when no offset "
                                                                "is given."})
    model = fields.String(load_default=None, allow_none=True,
                          validate=[validate.Length(max=200), _storable])


class UsageBatchSchema(Schema):
    events = fields.List(fields.Raw(), required=True,
                         validate=validate.Length(min=1, max=usage.MAX_BATCH), metadata={
                             "description": "Each an event (UsageEvent); one that is not a "
                                            "well-formed event is rejected on its own "
                                            "(status rejected, error.code invalid, "
                                            "error.errors naming its fields)."})

    def load(self, data, *args, **kwargs):
        """Only the batch's shape makes it 422 (an object whose ``events`` is a list of 1 to
        MAX_BATCH items). Each event is then taken on the plain path when it is exactly what
        ``UsageEventSchema`` accepts (most are), or checked by it, which names the fields at
        fault, and then becomes an ``InvalidEvent``: the same result either way."""
        events = data.get("events") if isinstance(data, dict) and set(data) == {"events"} \
            else None
        if not isinstance(events, list) or not 1 <= len(events) <= usage.MAX_BATCH:
            return super().load(data, *args, **kwargs)  # 422 naming what is wrong
        return {"events": [_plain_event(item) or _checked_event(item) for item in events]}


_EVENT_FIELDS = frozenset({"id", "dataset_id", "tokens", "occurred_at", "model"})
_EVENT_SCHEMA = UsageEventSchema()


def _plain_event(item) -> dict | None:
    """The event, when it is plainly well formed; None to have it checked field by field."""
    if not isinstance(item, dict) or not _EVENT_FIELDS >= set(item) >= {
            "id", "dataset_id", "tokens", "occurred_at"}:
        return None
    event_id, dataset_id, tokens = item["id"], item["dataset_id"], item["tokens"]
    model, occurred = item.get("model"), item["occurred_at"]
    if not (isinstance(event_id, str) and 1 <= len(event_id) <= 128
            and text_problem(event_id) is None
            and type(dataset_id) is int and 1 <= dataset_id <= MAX_DATASET_ID
            and type(tokens) is int and tokens <= MAX_EVENT_TOKENS
            and (model is None or isinstance(model, str) and len(model) <= 200
                 and text_problem(model) is None)
            and isinstance(occurred, str)):
        return None
    try:
        moment = dt.datetime.fromisoformat(occurred)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        moment = moment.astimezone(dt.timezone.utc)
    except (ValueError, OverflowError):
        return None
    return {"id": event_id, "dataset_id": dataset_id, "tokens": tokens,
            "occurred_at": moment, "model": model}


def _checked_event(item) -> dict | usage.InvalidEvent:
    given_id = item.get("id") if isinstance(item, dict) else None
    given_id = given_id if isinstance(given_id, str) and text_problem(given_id) is None else None
    if not isinstance(item, dict):
        errors = {"_schema": ["An event is an object."]}
    else:
        try:
            event = _EVENT_SCHEMA.load(item)
        except ValidationError as exc:
            errors = exc.messages
        else:
            return event | {"occurred_at": event["occurred_at"].astimezone(dt.timezone.utc)}
    field = next(iter(errors))
    message = errors[field][0] if isinstance(errors[field], list) else str(errors[field])
    return usage.InvalidEvent(given_id, usage.ItemError("invalid", field, message, errors))


class ItemErrorSchema(Schema):
    code = fields.String(metadata={"description": "invalid, not_found, no_royalty_price or "
                                                  "payment_required"})
    field = fields.String()
    message = fields.String()
    errors = fields.Dict(metadata={"description": "For an event that is not well formed: "
                                                  "each field at fault and what is wrong."})


class UsageOutcomeSchema(Schema):
    id = fields.String(allow_none=True, metadata={
        "description": "The event's id (null when it was sent without a string id)."})
    status = fields.String(metadata={"description": "accepted, duplicate or rejected"})
    tokens = fields.Integer(allow_none=True)
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
        start, end = usage.month_range(data["start"], data["end"], _today())
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
    occurred_period = fields.String(metadata={
        "description": "The month (YYYY-MM) the row's events occurred in."})
    charged_period = fields.String(metadata={
        "description": "The month they were charged to (and invoiced in): a late royalty "
                       "event's is the month it was reported in."})
    tokens = fields.Integer()
    calls = fields.Integer()
    amount = fields.Dict(metadata={"description": 'What was charged, {"amount": "0.42", '
                                                  '"currency": "CNY"}.'})
    list_amount = fields.Dict(metadata={
        "description": "What the tokens were worth at list price whatever paid, exact to a "
                       'millionth of the minor unit: {"amount": "0.0015", "currency": "CNY"}.'})


class UsageReportSchema(Schema):
    start = fields.Date(data_key="from")
    end = fields.Date(data_key="to")
    group_by = fields.String()
    rows = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "One per group, month occurred in, month charged to and currency."})
    totals = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "One per currency."})
    by_kind = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "data (metered calls) or royalty, per currency."})
    by_paid_by = fields.List(fields.Nested(UsageRowSchema), metadata={
        "description": "subscription, wallet, postpaid or free, per currency."})


@api.operation("/usage/events", "POST", summary="Report royalty usage (a batch of events)",
               permission="usage:write", body=UsageBatchSchema,
               response=UsageBatchResultSchema, tags=USAGE, errors=(409, 422),
               items_judged_alone="events")
def report_usage(principal: Principal, body: dict):
    """Up to 1,000 events of tokens produced by a model trained on a dataset, each charged by
    the dataset's royalty rate card on the organization's credit line. Each event id counts once,
    forever (a repeat is ``duplicate``, charged nothing); a rejected event — one that is not a
    well-formed event included (``error.code`` invalid, ``error.errors`` naming its fields) —
    does not hold up the others: only a batch that is not an object with a list ``events`` of 1
    to 1,000 items is 422. Events from an earlier month are charged in the current one."""
    result = usage.ingest_royalties(db_session(), organization_id=principal.organization_id,
                                    api_key_id=principal.api_key_id, events=body["events"])
    # Plain data already in the documented shape: dumped as it is (a thousand results).
    return Response(json.dumps(result.to_dict()), mimetype="application/json")


@api.operation("/usage", "GET", summary="The organization's usage and its cost",
               permission="usage:read", query=UsageQuerySchema, response=UsageReportSchema,
               tags=USAGE, errors=(422,))
def get_usage(principal: Principal, query: dict):
    """Tokens, cost (``amount`` charged, ``list_amount`` at list price) and calls of the usage
    events charged in the range (business days, at most 366) — a late royalty event in the month
    it was charged to — grouped by ``day`` (charged), ``dataset`` or ``key``, each row with the
    month its events occurred in and the month they were charged to; totals by kind and by what
    paid."""
    start, end = usage.month_range(query["start"], query["end"], _today())
    return usage.usage_report(db_session(), principal.organization_id, start, end,
                              query["group_by"])
