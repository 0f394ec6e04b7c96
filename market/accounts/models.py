"""Who is in the marketplace: organizations, their people, and the API keys of their machines."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.core.db import Base, UTCDateTime, utcnow
from pricing.tax import TaxpayerStatus


class OrgRole(str, enum.Enum):
    """What an organization does in the marketplace; one organization may hold several."""

    BUYER = "buyer"
    SUPPLIER = "supplier"
    PROCESSOR = "processor"
    EXCHANGE = "exchange"
    CHANNEL = "channel"
    PLATFORM = "platform"


class MemberRole(str, enum.Enum):
    """What a person may do inside their organization."""

    OWNER = "owner"
    MEMBER = "member"
    FINANCE = "finance"
    REVIEWER = "reviewer"


def _values(enum_cls) -> str:
    return ", ".join(f"'{member.value}'" for member in enum_cls)


TAXPAYER_STATUSES = tuple(status.value for status in TaxpayerStatus)


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = (
        CheckConstraint("tax_status IN ('general', 'small_scale', 'exempt')",
                        name="tax_status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Unified social credit code (统一社会信用代码) or another registry number.
    registration_number: Mapped[str | None] = mapped_column(String(64))
    default_currency: Mapped[str] = mapped_column(String(3), default="CNY")
    # The VAT standing checkout prices by: set only by platform finance, from evidence it
    # checked (a tax registration or exemption certificate), never by the buyer at checkout.
    tax_status: Mapped[str] = mapped_column(String(16), default="general",
                                            server_default="general")
    tax_status_evidence: Mapped[str | None] = mapped_column(String(200))
    tax_status_verified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    tax_status_verified_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    roles: Mapped[list[OrganizationRole]] = relationship(
        back_populates="organization", cascade="all, delete-orphan", lazy="selectin",
        order_by="OrganizationRole.role",
    )
    memberships: Mapped[list[Membership]] = relationship(
        back_populates="organization", cascade="all, delete-orphan"
    )
    api_keys: Mapped[list[ApiKey]] = relationship(back_populates="organization")

    @property
    def role_names(self) -> list[str]:
        return [r.role for r in self.roles]

    def has_role_name(self, role: str) -> bool:
        return role in self.role_names


class OrganizationRole(Base):
    __tablename__ = "organization_roles"
    __table_args__ = (
        UniqueConstraint("organization_id", "role"),
        CheckConstraint(f"role IN ({_values(OrgRole)})", name="role_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))

    organization: Mapped[Organization] = relationship(back_populates="roles")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    locale: Mapped[str | None] = mapped_column(String(10))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    memberships: Mapped[list[Membership]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin",
        order_by="Membership.id",
    )


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        UniqueConstraint("user_id", "organization_id"),
        CheckConstraint(f"role IN ({_values(MemberRole)})", name="role_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship(back_populates="memberships")
    organization: Mapped[Organization] = relationship(back_populates="memberships", lazy="joined")


class ApiKey(Base):
    """A machine credential of one organization; only a hash of its secret is ever stored."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # The key that created this one, if a key did: revoking it revokes this one.
    parent_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # The visible part, e.g. ``dmk_live_3Fq9x2Lm``: identifies the key in lists and logs.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 hex of the whole key
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer)
    monthly_token_cap: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    organization: Mapped[Organization] = relationship(back_populates="api_keys")

    @property
    def is_active(self) -> bool:
        now = utcnow()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class UserSession(Base):
    """A signed-in browser: the cookie carries a random secret, the server keeps its hash.

    A request is signed in only while its record is open and unexpired, so ending the record
    (sign-out, a password change, an operator) ends the session at once, whatever the cookie
    still says.
    """

    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex of the secret
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(lazy="joined")

    @property
    def is_open(self) -> bool:
        return self.ended_at is None and self.expires_at > utcnow()


class Invitation(Base):
    """An owner's offer of a membership to an e-mail address, accepted by its holder.

    The link carries a random secret, of which only the hash is stored. Only a person signed in
    with the invited e-mail can accept it, so no one joins an organization without consent.
    """

    __tablename__ = "invitations"
    __table_args__ = (CheckConstraint(f"role IN ({_values(MemberRole)})", name="role_known"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))  # stored lower-cased
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    accepted_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    organization: Mapped[Organization] = relationship(lazy="joined")

    @property
    def status(self) -> str:
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        return "pending" if self.expires_at > utcnow() else "expired"


class PendingRegistration(Base):
    """A registration waiting for its e-mail address to be confirmed through a mailed link.

    Registration answers alike for every address, so it cannot tell anyone which e-mails have
    an account: the account is made only when the address's holder opens the link.
    """

    __tablename__ = "pending_registrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), index=True)  # stored lower-cased
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    organization_name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[list[str]] = mapped_column(JSON)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    @property
    def is_pending(self) -> bool:
        return self.completed_at is None and self.expires_at > utcnow()
