"""Datasets, their immutable versions and records, supply chains, and listings under review."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from market.accounts.models import Organization
from market.core.db import Base, UTCDateTime, one_of, utcnow


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    title_zh: Mapped[str] = mapped_column(String(200))
    title_en: Mapped[str] = mapped_column(String(200))
    summary_zh: Mapped[str] = mapped_column(String(500), default="")
    summary_en: Mapped[str] = mapped_column(String(500), default="")
    description_zh: Mapped[str] = mapped_column(Text, default="")
    description_en: Mapped[str] = mapped_column(Text, default="")
    sector: Mapped[str] = mapped_column(String(40), index=True)
    modality: Mapped[str] = mapped_column(String(40), index=True)
    ai_stage: Mapped[str] = mapped_column(String(40), index=True)
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    licence: Mapped[str] = mapped_column(String(40))
    personal_information: Mapped[str] = mapped_column(String(20))
    sensitivity: Mapped[str] = mapped_column(String(20), default="general")
    # {"holding": "...", "usage": "...", "operation": "..."}: who holds each of the three rights.
    rights: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # What the quality report checks: fields every record must have, the label field if any.
    required_fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    label_field: Mapped[str | None] = mapped_column(String(100))
    # An expert-checked subset for the annotation-accuracy check: record id (in ``id_field``)
    # to the label an expert confirmed.
    id_field: Mapped[str | None] = mapped_column(String(100))
    expert_labels: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    organization: Mapped[Organization] = relationship()
    versions: Mapped[list[DatasetVersion]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.number")
    listing: Mapped[Listing | None] = relationship(back_populates="dataset", uselist=False)
    offers: Mapped[list[Offer]] = relationship(back_populates="dataset", order_by="Offer.id")

    @property
    def active_offers(self) -> list[Offer]:
        return [offer for offer in self.offers if offer.retired_at is None]

    def title(self, locale: str) -> str:
        return self.title_zh if str(locale).startswith("zh") else self.title_en


class DatasetVersion(Base):
    """One import of a dataset's records, or one set of its files (``source_format`` ``files``:
    ``record_count`` is then its files, ``source_bytes`` their bytes, ``token_count`` their
    tokens and ``content_sha256`` its manifest's Merkle root). Its content never changes; once
    submitted for listing its metadata does not either."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text, default="")
    source_format: Mapped[str] = mapped_column(String(10))
    source_filename: Mapped[str | None] = mapped_column(String(255))
    source_bytes: Mapped[int] = mapped_column(BigInteger)
    record_count: Mapped[int] = mapped_column(BigInteger)
    canonical_bytes: Mapped[int] = mapped_column(BigInteger)
    token_count: Mapped[int] = mapped_column(BigInteger)
    encoding: Mapped[str] = mapped_column(String(40))
    content_sha256: Mapped[str] = mapped_column(String(64))
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    samples: Mapped[list[Any]] = mapped_column(JSON)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON)
    quality_score: Mapped[int] = mapped_column(Integer)
    quality_grade: Mapped[str] = mapped_column(String(2))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    dataset: Mapped[Dataset] = relationship(back_populates="versions")

    @property
    def organization_id(self) -> int:
        return self.dataset.organization_id


class DatasetRecord(Base):
    """A record as its canonical JSON (what the metered API serves and charges), with its tokens."""

    __tablename__ = "dataset_records"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[str] = mapped_column(Text)
    tokens: Mapped[int] = mapped_column(Integer)


class UploadStatus(str, enum.Enum):
    PENDING = "pending"
    COMPLETED = "completed"
    ABORTED = "aborted"
    # The assembled content was not the declared SHA-256: the parts are gone, ``failure`` says
    # why, and the client starts a new upload.
    FAILED = "failed"
    # Left pending past ``UPLOAD_ABANDON_HOURS``: its parts were freed in the store.
    EXPIRED = "expired"


class Upload(Base):
    """One file on its way into the object store, in parts, for a version of a dataset.

    The supplier declares the file's path, media type, size and SHA-256 when it starts; the
    store refuses any other content when the upload completes, and the file is then measured
    and counted by ``token_profile``.
    """

    __tablename__ = "uploads"
    __table_args__ = (
        CheckConstraint(one_of("status", [s.value for s in UploadStatus]), name="status_known"),
        Index("ix_uploads_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    path: Mapped[str] = mapped_column(String(1024))
    media_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    expected_sha256: Mapped[str] = mapped_column(String(64))
    token_profile: Mapped[str] = mapped_column(String(64))
    store_upload_id: Mapped[str] = mapped_column(String(1024))
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.PENDING.value)
    object_key: Mapped[str | None] = mapped_column(String(100))
    tokens: Mapped[int | None] = mapped_column(BigInteger)
    basis: Mapped[dict[str, int] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failure: Mapped[str | None] = mapped_column(Text)


class VersionFile(Base):
    """One file of a version of files: its manifest entry, where its bytes are, and the facts
    its tokens were counted from. ``position`` is its place in the manifest's order."""

    __tablename__ = "version_files"
    __table_args__ = (UniqueConstraint("version_id", "path"),
                      UniqueConstraint("version_id", "position"))

    id: Mapped[int] = mapped_column(primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(1024))
    media_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(100))
    tokens: Mapped[int] = mapped_column(BigInteger)
    token_profile: Mapped[str] = mapped_column(String(64))
    basis: Mapped[dict[str, int]] = mapped_column(JSON)


class SupplyChainRevision(Base):
    """The participants of a dataset and their shares, as in force from ``created_at``.

    Revisions are never edited: a change is a new revision, so an order or a usage charge can
    keep pointing at the revision it was priced under.
    """

    __tablename__ = "supply_chain_revisions"
    __table_args__ = (UniqueConstraint("dataset_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(500), default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    shares: Mapped[list[SupplyChainShare]] = relationship(
        back_populates="revision_row", order_by="SupplyChainShare.position",
        cascade="all, delete-orphan", lazy="selectin")

    def shares_bps(self) -> list[tuple[str, int]]:
        return [(share.participant_key, share.share_bps) for share in self.shares]


class SupplyChainShare(Base):
    __tablename__ = "supply_chain_shares"
    __table_args__ = (
        UniqueConstraint("revision_id", "organization_id", "role"),
        CheckConstraint("share_bps >= 0 AND share_bps <= 10000", name="share_in_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    revision_id: Mapped[int] = mapped_column(ForeignKey("supply_chain_revisions.id",
                                                        ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    role: Mapped[str] = mapped_column(String(20))
    share_bps: Mapped[int] = mapped_column(Integer)

    revision_row: Mapped[SupplyChainRevision] = relationship(back_populates="shares")
    organization: Mapped[Organization] = relationship(lazy="joined")

    @property
    def participant_key(self) -> str:
        return f"{self.role}:{self.organization_id}"


class ListingStatus(str, enum.Enum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"
    DELISTED = "delisted"


class Listing(Base):
    """A dataset offered on the marketplace through an exchange, and where its review stands."""

    __tablename__ = "listings"
    __table_args__ = (
        CheckConstraint("status IN ('draft', 'submitted', 'approved', 'rejected', 'suspended', "
                        "'delisted')", name="status_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), unique=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    exchange_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    submitted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    listed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    dataset: Mapped[Dataset] = relationship(back_populates="listing")
    version: Mapped[DatasetVersion] = relationship()
    exchange: Mapped[Organization] = relationship()
    events: Mapped[list[ListingEvent]] = relationship(
        back_populates="listing", order_by="ListingEvent.id", cascade="all, delete-orphan")

    @property
    def organization_id(self) -> int:
        return self.dataset.organization_id


class ListingEvent(Base):
    """Each step of a listing's review, with the reviewer's reasons."""

    __tablename__ = "listing_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    listing_id: Mapped[int] = mapped_column(ForeignKey("listings.id", ondelete="CASCADE"),
                                            index=True)
    action: Mapped[str] = mapped_column(String(20))
    status_after: Mapped[str] = mapped_column(String(16))
    version_id: Mapped[int] = mapped_column(ForeignKey("dataset_versions.id"))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reason_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    text: Mapped[str] = mapped_column(Text, default="")
    checklist: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    listing: Mapped[Listing] = relationship(back_populates="events")


class SearchTerm(Base):
    """The catalogue's search index: a dataset's terms and their weights (see ``search``)."""

    __tablename__ = "search_terms"

    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"),
                                            primary_key=True)
    term: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)
    weight: Mapped[int] = mapped_column(Integer)


class Offer(Base):
    """A price for a dataset under one commercial model (the terms are a ``pricing`` offer).

    Offers are never edited: a price change retires the old offer and adds a new one, so every
    order can point at the terms it was sold under.
    """

    __tablename__ = "offers"
    __table_args__ = (
        CheckConstraint("kind IN ('subscription', 'mall_package', 'custom', 'metered', "
                        "'royalty')", name="kind_known"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    code: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    # The price a buyer compares first (per period, per package, per million tokens, or the
    # quote's total), in minor units; for sorting the catalogue by price.
    headline_minor: Mapped[int] = mapped_column(BigInteger)
    terms: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    dataset: Mapped[Dataset] = relationship(back_populates="offers")

    @property
    def organization_id(self) -> int:
        return self.dataset.organization_id

    @property
    def active(self) -> bool:
        return self.retired_at is None
