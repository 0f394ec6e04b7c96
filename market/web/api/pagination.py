"""How every list of the API pages: ``?cursor=&limit=`` in, ``{"items": [...], "next_cursor":
...}`` out.

A list operation takes ``PageQuerySchema`` (or a schema derived from it, adding its filters) as
its query and answers ``page_schema(ItemSchema)``; its view hands ``page_request(query)`` to a
``market.core.keyset.Keyset``. ``next_cursor`` is null on the last page; a client walks the list by
sending each page's ``next_cursor`` back until it is. ``tests/market/test_pagination.py`` walks
every operation of the API and fails for a list that pages any other way.
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from market.core.keyset import DEFAULT_LIMIT, MAX_CURSOR_LENGTH, MAX_LIMIT, PageRequest


class PageQuerySchema(Schema):
    cursor = fields.String(load_default=None, validate=validate.Length(
        max=MAX_CURSOR_LENGTH), metadata={
        "description": "The `next_cursor` of the previous page; absent or empty for the first "
                       "page. Opaque: a cursor of another list, or altered, answers 422."})
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(
        min=1, max=MAX_LIMIT), metadata={"description": "Items per page, at most "
                                                        f"{MAX_LIMIT}."})


class PageSchema(Schema):
    """The envelope of one page of a list (its ``items`` are set by ``page_schema``)."""

    next_cursor = fields.String(allow_none=True, metadata={
        "description": "Send it as `cursor` for the next page; null on the last page."})


_PAGE_SCHEMAS: dict[type[Schema], type[PageSchema]] = {}


def page_schema(item: type[Schema]) -> type[PageSchema]:
    """The page of ``item``: ``items``, a list of it, and ``next_cursor``. One class per item
    schema, named after it (``OrderSchema`` → ``OrderPage`` in the OpenAPI document). A list
    with more to say (the catalogue's facets) derives its envelope from ``PageSchema``."""
    if item not in _PAGE_SCHEMAS:
        name = item.__name__.removesuffix("Schema") + "PageSchema"
        _PAGE_SCHEMAS[item] = type(name, (PageSchema,), {
            "items": fields.List(fields.Nested(item), required=True),
            "__doc__": f"A page of {item.__name__.removesuffix('Schema')} items."})
    return _PAGE_SCHEMAS[item]


def page_request(query: dict) -> PageRequest:
    return PageRequest(cursor=query["cursor"], limit=query["limit"])
