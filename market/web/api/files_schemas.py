"""Schemas of versions made of files: uploads, their parts, manifests and proofs."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from market.catalog.manifest import MAX_PATH_BYTES
from market.core.inputs import INT64_MAX
from market.core.objects import DEFAULT_URL_SECONDS, MAX_PARTS, MAX_URL_SECONDS
from market.web.api.catalog_schemas import VersionSchema

_SHA256 = {"description": "The file's SHA-256, 64 hexadecimal digits."}


class UploadStartSchema(Schema):
    path = fields.String(required=True, validate=validate.Length(min=1, max=MAX_PATH_BYTES),
                         metadata={"description": "The file's path in the version: relative, "
                                                  "`/` between parts, no `..`."})
    media_type = fields.String(required=True, validate=validate.Length(min=3, max=255),
                               metadata={"description": "type/subtype, without parameters."})
    size = fields.Integer(required=True, validate=validate.Range(min=1, max=INT64_MAX),
                          metadata={"description": "The file's size in bytes."})
    sha256 = fields.String(required=True, validate=validate.Length(equal=64), metadata=_SHA256)
    token_profile = fields.String(load_default=None, validate=validate.Length(max=64),
                                  metadata={"description": "The profile that counts the "
                                            "file's tokens; default by media type."})


class UploadSchema(Schema):
    id = fields.Integer()
    dataset_id = fields.Integer()
    path = fields.String()
    media_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String(attribute="expected_sha256", metadata=_SHA256)
    token_profile = fields.String()
    status = fields.String(metadata={"description": "pending, completed, aborted, failed (the "
                                                    "content was not the declared SHA-256) or "
                                                    "expired (left pending too long)."})
    failure = fields.String(allow_none=True, metadata={
        "description": "Why a failed upload failed."})
    object_key = fields.String(allow_none=True)
    tokens = fields.Integer(allow_none=True)
    basis = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True,
                        metadata={"description": "The measured facts the tokens were counted "
                                                 "from."})
    created_at = fields.AwareDateTime()
    completed_at = fields.AwareDateTime(allow_none=True)


class PartSchema(Schema):
    number = fields.Integer(validate=validate.Range(min=1, max=MAX_PARTS))
    size = fields.Integer()
    etag = fields.String(metadata={"description": "The hex MD5 of the part's bytes."})


class PartUrlQuerySchema(Schema):
    expires = fields.Integer(load_default=DEFAULT_URL_SECONDS,
                             validate=validate.Range(min=1, max=MAX_URL_SECONDS),
                             metadata={"description": "Seconds the URL is valid."})


class PartUrlSchema(Schema):
    number = fields.Integer()
    url = fields.String(allow_none=True, metadata={
        "description": "PUT the part's bytes here, straight to the bucket; null where the store "
                       "takes parts only through the app (`PUT /uploads/{id}/parts/{number}`)."})
    expires = fields.Integer()


class UploadPartsSchema(Schema):
    upload = fields.Nested(UploadSchema)
    parts = fields.List(fields.Nested(PartSchema), metadata={
        "description": "The parts that have arrived, by number; none once the upload is "
                       "completed or aborted."})


class FileVersionCreateSchema(Schema):
    upload_ids = fields.List(fields.Integer(validate=validate.Range(min=1)), required=True,
                             validate=validate.Length(min=1, max=10_000))
    notes = fields.String(load_default="", validate=validate.Length(max=2000))


class FileVersionSchema(VersionSchema):
    id = fields.Integer()
    dataset_id = fields.Integer()


class ManifestEntrySchema(Schema):
    path = fields.String()
    media_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String(metadata=_SHA256)
    tokens = fields.Integer()
    token_profile = fields.String()
    basis = fields.Dict(keys=fields.String(), values=fields.Integer())


class ProofQuerySchema(Schema):
    path = fields.String(required=True, validate=validate.Length(min=1, max=MAX_PATH_BYTES))


class ProofSchema(Schema):
    format = fields.String()
    entry = fields.Dict()
    leaf_index = fields.Integer()
    tree_size = fields.Integer()
    audit_path = fields.List(fields.String())
    root = fields.String(metadata={"description": "The version's content_sha256."})

