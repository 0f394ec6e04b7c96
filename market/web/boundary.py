"""The one input boundary of the web layer: every value a request carries meets
``market.core.inputs``' rules before a view sees it.

- Path integers (``<int:...>``) within the 32-bit range of the id columns; query and form
  values, and their names, free of NUL and lone surrogates: checked for every request, API and
  storefront alike (``init_app``).
- API bodies: parsed JSON checked for depth (``JSON_MAX_DEPTH``) and text (``check_body``).
- Storefront forms: ``BoundedForm`` holds their integers, amounts and dates to the same limits.
- API schemas: ``bound_schema`` gives every loaded field without a limit of its own the
  boundary's: integers the 32-bit range, amounts ``MAX_AMOUNT``, dates and instants the
  marketplace's years, text ``MAX_TEXT`` characters. A field that needs more (a 64-bit token
  total) declares its own range, which is kept.

A value outside is a 422 problem naming its field, never a 500. Request lines and headers too
large for the server are answered before the app runs, as problem+json too
(``market.web.serving``).
"""

from __future__ import annotations

from typing import Any

import datetime as dt
from decimal import Decimal

from flask import Flask, current_app, request
from flask_wtf import FlaskForm
from marshmallow import Schema, ValidationError, fields, validate
from wtforms import DateField, DecimalField, FieldList, FormField, IntegerField

from market.core import inputs
from market.core.errors import InvalidInput
from pricing.periods import parse_month

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class Month(fields.String):
    """A month written ``YYYY-MM``, within the marketplace's years."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            year, _ = parse_month(text)
        except ValueError:
            raise ValidationError("Give a month as YYYY-MM.") from None
        if not inputs.FIRST_YEAR <= year <= inputs.LAST_YEAR:
            raise ValidationError(
                f"Give a month from {inputs.FIRST_YEAR} to {inputs.LAST_YEAR}.")
        return text


def _range_for(field: fields.Field) -> validate.Range | None:
    if isinstance(field, fields.Integer):
        return validate.Range(min=inputs.INT32_MIN, max=inputs.INT32_MAX)
    if isinstance(field, fields.AwareDateTime) or (
            isinstance(field, fields.DateTime) and getattr(field, "timezone", None) is not None):
        return validate.Range(min=inputs.FIRST_MOMENT, max=inputs.LAST_MOMENT)
    if isinstance(field, fields.NaiveDateTime):
        return validate.Range(min=inputs.FIRST_MOMENT.replace(tzinfo=None),
                              max=inputs.LAST_MOMENT.replace(tzinfo=None))
    if isinstance(field, fields.Date):
        return validate.Range(min=inputs.FIRST_DATE, max=inputs.LAST_DATE)
    return None


class AmountBound(validate.Validator):
    """An amount of at most ``MAX_AMOUNT`` either way (a Range would be written into the
    OpenAPI document as strings for a decimal-as-string field)."""

    def __call__(self, value):
        if value is not None and abs(value) > inputs.MAX_AMOUNT:
            raise ValidationError(f"Give an amount of at most {inputs.MAX_AMOUNT:,}.")
        return value


def _bound_field(field: fields.Field) -> None:
    if isinstance(field, fields.Nested):
        nested = field.nested
        if isinstance(nested, type) and issubclass(nested, Schema):
            bound_schema(nested)
        elif isinstance(nested, Schema):
            bound_schema(type(nested))
        return
    if isinstance(field, fields.List):
        _bound_field(field.inner)
        return
    if isinstance(field, fields.Dict) and field.value_field is not None:
        _bound_field(field.value_field)
    if isinstance(field, fields.Decimal):
        field.validators.append(AmountBound())
        return
    limit = _range_for(field)
    if limit is not None:
        ranges = [v for v in field.validators if isinstance(v, validate.Range)]
        if not ranges or all(r.max is None for r in ranges):
            field.validators.append(validate.Range(max=limit.max))
        if not ranges or all(r.min is None for r in ranges):
            field.validators.append(validate.Range(min=limit.min))
        return
    if isinstance(field, fields.String) and not any(
            isinstance(v, (validate.Length, validate.OneOf, validate.Equal))
            for v in field.validators):
        field.validators.append(validate.Length(max=inputs.MAX_TEXT))


def bound_schema(schema: type[Schema]) -> type[Schema]:
    """Give every loaded field of ``schema`` (and of the schemas it nests) the boundary's limits
    where it has none of its own; done once per schema class, when an operation declares it."""
    if schema.__dict__.get("_bounded"):
        return schema
    schema._bounded = True
    for field in schema._declared_fields.values():
        if not field.dump_only:
            _bound_field(field)
    return schema


class BoundedForm(FlaskForm):
    """A storefront form whose integer, amount and date fields, nested ones included, keep to
    the boundary's limits: beyond them a field gets an error like any other invalid value."""

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        for field in _leaf_fields(self):
            problem = _form_value_problem(field)
            if problem is not None:
                field.errors = [*field.errors, problem]
                valid = False
        return valid


def _leaf_fields(form):
    for field in form:
        if isinstance(field, FormField):
            yield from _leaf_fields(field.form)
        elif isinstance(field, FieldList):
            for entry in field.entries:
                yield from (_leaf_fields(entry.form) if isinstance(entry, FormField)
                            else [entry])
        else:
            yield field


def _form_value_problem(field) -> str | None:
    value = field.data
    if value is None:
        return None
    if isinstance(field, IntegerField) and not inputs.INT32_MIN <= value <= inputs.INT32_MAX:
        return f"Give a number from {inputs.INT32_MIN:,} to {inputs.INT32_MAX:,}."
    if isinstance(field, DecimalField) and isinstance(value, Decimal) \
            and abs(value) > inputs.MAX_AMOUNT:
        return f"Give an amount of at most {inputs.MAX_AMOUNT:,}."
    if isinstance(field, DateField) and isinstance(value, dt.date) \
            and not inputs.FIRST_DATE <= value <= inputs.LAST_DATE:
        return f"Give a date from {inputs.FIRST_DATE} to {inputs.LAST_DATE}."
    return None


def check_body(payload: Any, items_judged_alone: str | None = None) -> Any:
    """A parsed API body, unchanged, or a 422 naming the member at fault. The text of the items
    of ``items_judged_alone`` (a usage batch's ``events``) is left to the schema, which gives
    each item its own outcome; their depth is checked all the same."""
    return inputs.check_json(payload, "", current_app.config["JSON_MAX_DEPTH"],
                             items_judged_alone)


def _check_request() -> None:
    for name, value in (request.view_args or {}).items():
        if isinstance(value, int) and not 0 <= value <= inputs.INT32_MAX:
            raise InvalidInput(f"Give an id from 0 to {inputs.INT32_MAX:,}.", field=name)
        if isinstance(value, str):
            inputs.check_text(value, name)
    _check_pairs(request.args)
    if request.method != "GET" and request.mimetype in FORM_TYPES \
            and not request.path.startswith("/api/"):
        _check_pairs(request.form)


def _check_pairs(pairs) -> None:
    for name, value in pairs.items(multi=True):
        inputs.check_text(name, "_query")
        inputs.check_text(value, name)


def init_app(app: Flask) -> None:
    app.before_request(_check_request)
