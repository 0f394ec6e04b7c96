"""Marshmallow schemas, one per API use case; the OpenAPI document is generated from them."""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

from market.accounts.authz import SCOPES
from market.accounts.models import MemberRole
from market.web.api.pagination import PageQuerySchema

_limit = dict(validate=validate.Range(min=1, max=2**31 - 1), allow_none=True)


class ProblemSchema(Schema):
    type = fields.String(metadata={"description": "A URI naming the kind of problem."})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.Dict(keys=fields.String(), values=fields.Raw(),
                         metadata={"description": "Each field at fault and its messages."})
    code = fields.String(required=True, metadata={
        "description": "The stable machine-readable cause (`insufficient_tokens`, "
                       "`invalid_input`, ...): branch on this, not on the title or detail."})
    request_id = fields.String(metadata={
        "description": "The request's id, as in its `X-Request-Id` header: quote it to support."})
    tokens_needed = fields.Integer(metadata={
        "description": "402 of a metered call: the tokens the call would be charged."})
    tokens_available = fields.Integer(metadata={
        "description": "402 of a metered call: the tokens this key can still spend on it."})

    class Meta:
        # A problem may carry further members of its own (RFC 9457): clients ignore the others.
        unknown = INCLUDE


class OrganizationSchema(Schema):
    id = fields.Integer()
    slug = fields.String()
    name = fields.String()
    roles = fields.List(fields.String(), attribute="role_names")
    default_currency = fields.String()
    registration_number = fields.String(allow_none=True)
    tax_status = fields.String(metadata={
        "description": "general, small_scale or exempt, as verified by platform finance; "
                       "checkout prices by it."})
    tax_status_verified_at = fields.AwareDateTime(allow_none=True)
    created_at = fields.AwareDateTime()


class TaxStatusSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(
        ["general", "small_scale", "exempt"]))
    evidence = fields.String(required=True, validate=validate.Length(min=1, max=200), metadata={
        "description": "The certificate or registration the status was verified from."})


class RegistrationSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True,
                             validate=validate.Length(max=200))
    organization_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    roles = fields.List(fields.String(validate=validate.OneOf(
        ["buyer", "supplier", "processor", "channel"])), required=True,
        validate=validate.Length(min=1))


class RegistrationSentSchema(Schema):
    email = fields.String()
    status = fields.String(metadata={"description": "`confirmation_sent`, for every address."})


class RegistrationConfirmSchema(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=100))


class AccountSchema(Schema):
    user_id = fields.Integer(attribute="id")
    email = fields.String()
    name = fields.String()
    organization = fields.Function(lambda user: OrganizationSchema().dump(
        user.memberships[0].organization))


class MeSchema(Schema):
    organization = fields.Nested(OrganizationSchema)
    user_id = fields.Integer(allow_none=True)
    email = fields.String(allow_none=True)
    member_role = fields.String(allow_none=True)
    api_key_prefix = fields.String(allow_none=True)
    scopes = fields.List(fields.String())


class MemberSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    email = fields.String(attribute="user.email")
    name = fields.String(attribute="user.name")
    role = fields.String()
    created_at = fields.AwareDateTime()


class InvitationCreateSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in MemberRole]))


class InvitationSchema(Schema):
    id = fields.Integer()
    email = fields.String()
    role = fields.String()
    status = fields.String(metadata={"description": "pending, accepted, revoked or expired."})
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()


class InvitationCreatedSchema(InvitationSchema):
    accept_url = fields.String(metadata={
        "description": "The link the invitee opens, signed in with the invited e-mail, to "
                       "accept. Shown in this response only; send it to the invitee."})


class InvitationAcceptSchema(Schema):
    token = fields.String(required=True, validate=validate.Length(min=1, max=100))


class ApiKeySchema(Schema):
    id = fields.Integer()
    name = fields.String()
    prefix = fields.String(metadata={"description": "The visible start of the key."})
    scopes = fields.List(fields.String())
    requests_per_minute = fields.Integer(allow_none=True)
    tokens_per_minute = fields.Integer(allow_none=True)
    monthly_token_cap = fields.Integer(allow_none=True)
    created_at = fields.AwareDateTime()
    last_used_at = fields.AwareDateTime(allow_none=True)
    expires_at = fields.AwareDateTime(allow_none=True)
    revoked_at = fields.AwareDateTime(allow_none=True)
    is_active = fields.Boolean()


class ApiKeyCreatedSchema(ApiKeySchema):
    secret = fields.String(metadata={"description": "The whole key. Shown once, never again."})


class ApiKeyCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    scopes = fields.List(fields.String(validate=validate.OneOf(sorted(SCOPES))), required=True,
                         validate=validate.Length(min=1))
    requests_per_minute = fields.Integer(load_default=None, **_limit)
    tokens_per_minute = fields.Integer(load_default=None, **_limit)
    monthly_token_cap = fields.Integer(load_default=None, **_limit)
    expires_at = fields.AwareDateTime(load_default=None, allow_none=True)


class ApiKeyUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=100))
    requests_per_minute = fields.Integer(**_limit)
    tokens_per_minute = fields.Integer(**_limit)
    monthly_token_cap = fields.Integer(**_limit)


class AuditEntrySchema(Schema):
    seq = fields.Integer()
    occurred_at = fields.AwareDateTime()
    action = fields.String()
    actor_user_id = fields.Integer(allow_none=True)
    actor_api_key_id = fields.Integer(allow_none=True)
    object_type = fields.String(allow_none=True)
    object_id = fields.String(allow_none=True)
    data = fields.Dict()
    hash = fields.String()


class AuditQuerySchema(PageQuerySchema):
    action = fields.String(load_default=None, validate=validate.Length(max=64))


class HealthSchema(Schema):
    status = fields.String()
    database = fields.String()

