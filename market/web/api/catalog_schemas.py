"""Schemas of the catalogue's API use cases."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from market.web.api.pagination import PageQuerySchema, PageSchema
from market.catalog.browse import FACETS, SORTS
from market.catalog.listings import REASON_CODES
from market.catalog.taxonomy import (
    AI_STAGES, CHAIN_ROLES, LANGUAGES, LICENCES, MODALITIES, PERSONAL_INFORMATION, RIGHTS,
    SECTORS, SENSITIVITY,
)


def _code(vocabulary, **kwargs):
    return fields.String(validate=validate.OneOf(list(vocabulary)), **kwargs)


class DatasetWriteSchema(Schema):
    title_zh = fields.String(required=True, validate=validate.Length(min=1, max=200))
    title_en = fields.String(required=True, validate=validate.Length(min=1, max=200))
    summary_zh = fields.String(load_default="", validate=validate.Length(max=500))
    summary_en = fields.String(load_default="", validate=validate.Length(max=500))
    description_zh = fields.String(load_default="", validate=validate.Length(max=20000))
    description_en = fields.String(load_default="", validate=validate.Length(max=20000))
    sector = _code(SECTORS, required=True)
    modality = _code(MODALITIES, required=True)
    ai_stage = _code(AI_STAGES, required=True)
    languages = fields.List(_code(LANGUAGES), load_default=list)
    licence = _code(LICENCES, required=True)
    personal_information = _code(PERSONAL_INFORMATION, required=True)
    sensitivity = _code(SENSITIVITY, load_default="general")
    rights = fields.Dict(keys=fields.String(validate=validate.OneOf(list(RIGHTS))),
                         values=fields.String(validate=validate.Length(min=1, max=200)),
                         load_default=dict,
                         metadata={"description": "Holder of each right: holding, usage, "
                                                  "operation."})
    required_fields = fields.List(fields.String(validate=validate.Length(min=1, max=100)),
                                  load_default=list)
    label_field = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(min=1, max=100))
    id_field = fields.String(load_default=None, allow_none=True,
                             validate=validate.Length(min=1, max=100))
    expert_labels = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=200)),
        values=fields.String(validate=validate.Length(max=200)), load_default=dict,
        validate=validate.Length(max=10_000),
        metadata={"description": "Expert-checked labels by record id, for the annotation "
                                 "accuracy of the quality report."})


class DatasetUpdateSchema(DatasetWriteSchema):
    """The same fields, each optional: only those sent change."""

    def __init__(self, **kwargs):
        super().__init__(partial=True, **kwargs)


class VersionSummarySchema(Schema):
    number = fields.Integer()
    records = fields.Integer(attribute="record_count")
    tokens = fields.Integer(attribute="token_count")
    encoding = fields.String()
    bytes = fields.Integer(attribute="canonical_bytes")
    source_bytes = fields.Integer()
    source_format = fields.String()
    content_sha256 = fields.String()
    quality_score = fields.Integer()
    quality_grade = fields.String()
    created_at = fields.AwareDateTime()
    locked = fields.Function(lambda v: v.locked_at is not None)


class VersionSchema(VersionSummarySchema):
    notes = fields.String()
    schema = fields.Dict()
    samples = fields.List(fields.Dict())
    quality = fields.Dict()


OFFER_KINDS = ("subscription", "mall_package", "custom", "metered", "royalty")


class OfferSchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    code = fields.String()
    currency = fields.String()
    headline_minor = fields.Integer(metadata={"description": "Headline price, minor units."})
    terms = fields.Dict(metadata={"description": "The offer as pricing serializes it."})
    created_at = fields.AwareDateTime()
    retired_at = fields.AwareDateTime(allow_none=True)
    active = fields.Boolean()


class OfferCreateSchema(Schema):
    terms = fields.Dict(required=True, metadata={
        "description": "An offer: kind (subscription, mall_package, custom, metered, royalty), "
                       "code, and that kind's prices; money as {amount: \"12.50\", currency}."})


class ListingSummarySchema(Schema):
    id = fields.Integer()
    status = fields.String()
    version = fields.Integer(attribute="version.number")
    exchange_id = fields.Integer()
    submitted_at = fields.AwareDateTime(allow_none=True)
    due_at = fields.AwareDateTime(allow_none=True)
    listed_at = fields.AwareDateTime(allow_none=True)


class DatasetCardSchema(Schema):
    """What a catalogue result shows of a dataset."""

    id = fields.Integer()
    supplier = fields.String(attribute="organization.name")
    title_zh = fields.String()
    title_en = fields.String()
    summary_zh = fields.String()
    summary_en = fields.String()
    sector = fields.String()
    modality = fields.String()
    ai_stage = fields.String()
    languages = fields.List(fields.String())
    licence = fields.String()


class DatasetSchema(DatasetCardSchema):
    """A dataset in full: the card's fields and its descriptions, rights, fields, listing and
    active offers."""

    organization_id = fields.Integer()
    description_zh = fields.String()
    description_en = fields.String()
    personal_information = fields.String()
    sensitivity = fields.String()
    rights = fields.Dict()
    required_fields = fields.List(fields.String())
    label_field = fields.String(allow_none=True)
    id_field = fields.String(allow_none=True)
    expert_labels_count = fields.Function(lambda d: len(d.expert_labels or {}))
    created_at = fields.AwareDateTime()
    listing = fields.Nested(ListingSummarySchema, allow_none=True)
    offers = fields.List(fields.Nested(OfferSchema), attribute="active_offers")


class CatalogQuerySchema(PageQuerySchema):
    q = fields.String(load_default="", validate=validate.Length(max=200))
    sector = _code(SECTORS)
    modality = _code(MODALITIES)
    ai_stage = _code(AI_STAGES)
    licence = _code(LICENCES)
    grade = fields.String(validate=validate.OneOf(["A", "B", "C", "D"]))
    model = fields.String(validate=validate.OneOf(list(OFFER_KINDS)),
                          metadata={"description": "Commercial model: " + ", ".join(OFFER_KINDS)})
    sort = fields.String(load_default="relevance", validate=validate.OneOf(SORTS))


class CatalogItemSchema(Schema):
    dataset = fields.Nested(DatasetCardSchema)
    version = fields.Nested(VersionSummarySchema)
    relevance = fields.Integer()


class CatalogPageSchema(PageSchema):
    items = fields.List(fields.Nested(CatalogItemSchema), required=True)
    facets = fields.Dict(keys=fields.String(validate=validate.OneOf(list(FACETS))),
                         values=fields.Dict(keys=fields.String(), values=fields.Integer()))
    total = fields.Integer(metadata={"description": "Every dataset matching, on all pages."})


class ImportQuerySchema(Schema):
    filename = fields.String(load_default=None, validate=validate.Length(max=255))
    notes = fields.String(load_default="", validate=validate.Length(max=2000))


class ShareSchema(Schema):
    organization_id = fields.Integer(required=True)
    organization = fields.String(attribute="organization.name", dump_only=True)
    role = _code(CHAIN_ROLES, required=True)
    share_bps = fields.Integer(required=True, validate=validate.Range(min=0, max=10_000))


class SupplyChainWriteSchema(Schema):
    participants = fields.List(fields.Nested(ShareSchema), required=True,
                               validate=validate.Length(min=1, max=20))
    note = fields.String(load_default="", validate=validate.Length(max=500))


class SupplyChainSchema(Schema):
    revision = fields.Integer()
    note = fields.String()
    created_at = fields.AwareDateTime()
    participants = fields.List(fields.Nested(ShareSchema), attribute="shares")


class SupplyChainHistorySchema(Schema):
    current = fields.Nested(SupplyChainSchema, allow_none=True)
    revisions = fields.List(fields.Nested(SupplyChainSchema))


class SubmitListingSchema(Schema):
    version = fields.Integer(required=True, validate=validate.Range(min=1))
    exchange_id = fields.Integer(required=True)


class ListingEventSchema(Schema):
    action = fields.String()
    status_after = fields.String()
    version_id = fields.Integer()
    actor_user_id = fields.Integer(allow_none=True)
    reason_codes = fields.List(fields.String())
    text = fields.String()
    checklist = fields.Dict()
    occurred_at = fields.AwareDateTime()


class ChecklistItemSchema(Schema):
    code = fields.String()
    passed = fields.Boolean()
    detail = fields.String()


class ListingBriefSchema(ListingSummarySchema):
    dataset_id = fields.Integer()
    dataset_title_zh = fields.String(attribute="dataset.title_zh")
    dataset_title_en = fields.String(attribute="dataset.title_en")
    supplier = fields.String(attribute="dataset.organization.name")
    decided_at = fields.AwareDateTime(allow_none=True)


class ListingSchema(ListingBriefSchema):
    events = fields.List(fields.Nested(ListingEventSchema))


class ReviewItemSchema(Schema):
    listing = fields.Nested(ListingBriefSchema)
    checklist = fields.List(fields.Nested(ChecklistItemSchema))
    overdue = fields.Boolean()


class ApproveSchema(Schema):
    text = fields.String(load_default="", validate=validate.Length(max=4000))


class RejectSchema(Schema):
    reasons = fields.List(fields.String(validate=validate.OneOf(list(REASON_CODES))),
                          required=True, validate=validate.Length(min=1))
    text = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class ReasonSchema(Schema):
    text = fields.String(required=True, validate=validate.Length(min=1, max=4000))


class TaxonomySchema(Schema):
    vocabularies = fields.Dict()
    reason_codes = fields.Dict()
