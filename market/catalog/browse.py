"""What buyers browse: listed datasets, searched, filtered, faceted, sorted and paged.

Facet counts are "disjunctive": each facet counts the datasets matching the query and every
other filter, so choosing a sector still shows how many datasets the other sectors have.
The cursor is opaque to clients (an encoded position in the ordered result).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from market.catalog import search
from market.catalog.models import Dataset, DatasetVersion, Listing, ListingStatus, Offer
from market.errors import InvalidInput

FACETS = {
    "sector": Dataset.sector,
    "modality": Dataset.modality,
    "ai_stage": Dataset.ai_stage,
    "licence": Dataset.licence,
    "grade": DatasetVersion.quality_grade,
    "model": Offer.kind,  # the commercial model; a dataset counts once under each it offers
}
SORTS = ("relevance", "newest", "quality", "price")


@dataclass
class CatalogQuery:
    q: str = ""
    filters: dict[str, str] = field(default_factory=dict)
    sort: str = "relevance"
    cursor: str | None = None
    limit: int = 20


@dataclass
class CatalogPage:
    items: list[tuple[Dataset, DatasetVersion, int]]  # dataset, listed version, relevance
    facets: dict[str, dict[str, int]]
    total: int
    next_cursor: str | None


def _base(query: CatalogQuery, skip_facet: str | None = None) -> Select | None:
    stmt = (select(Dataset, DatasetVersion)
            .join(Listing, Listing.dataset_id == Dataset.id)
            .join(DatasetVersion, DatasetVersion.id == Listing.version_id)
            .where(Listing.status == ListingStatus.APPROVED.value))
    matches = search.matching(query.q) if query.q.strip() else None
    if query.q.strip() and matches is None:
        return None  # a query of stop words only matches nothing
    if matches is not None:
        stmt = stmt.join(matches, matches.c.dataset_id == Dataset.id) \
                   .add_columns(matches.c.relevance)
    else:
        stmt = stmt.add_columns(literal(0).label("relevance"))
    for name, value in query.filters.items():
        if name == skip_facet:
            continue
        if name == "model":
            stmt = stmt.where(_offers().where(Offer.kind == value).exists())
        else:
            stmt = stmt.where(FACETS[name] == value)
    return stmt


def _offers():
    return select(Offer.id).where(Offer.dataset_id == Dataset.id, Offer.retired_at.is_(None))


def _lowest_price():
    return (select(func.min(Offer.headline_minor)).where(Offer.dataset_id == Dataset.id,
                                                         Offer.retired_at.is_(None))
            .scalar_subquery())


# No page of ours lies this deep; a larger offset (10**30) would overflow the database's integer.
MAX_OFFSET = 1_000_000


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["o"]
    except (ValueError, KeyError, TypeError):
        raise InvalidInput("Not a cursor from this API.", field="cursor") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise InvalidInput("Not a cursor from this API.", field="cursor")
    return offset


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def browse(session: Session, query: CatalogQuery) -> CatalogPage:
    """Listed datasets matching the query, with facet counts."""
    unknown = set(query.filters) - set(FACETS)
    if unknown:
        raise InvalidInput(f"Cannot filter by {sorted(unknown)[0]!r}.", field=sorted(unknown)[0])
    if query.sort not in SORTS:
        raise InvalidInput(f"Sort by one of {', '.join(SORTS)}.", field="sort")
    offset = _decode_cursor(query.cursor)
    stmt = _base(query)
    if stmt is None:
        return CatalogPage([], {name: {} for name in FACETS}, 0, None)

    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    relevance = stmt.selected_columns.relevance
    if query.sort == "quality":
        order = [DatasetVersion.quality_score.desc(), Listing.listed_at.desc()]
    elif query.sort == "price":
        # Lowest active headline price first; datasets without a price last.
        lowest = _lowest_price()
        order = [lowest.is_(None), lowest, Listing.listed_at.desc()]
    elif query.sort == "relevance" and query.q.strip():
        order = [relevance.desc(), Listing.listed_at.desc()]
    else:
        order = [Listing.listed_at.desc()]
    rows = session.execute(stmt.order_by(*order, Dataset.id.desc())
                           .offset(offset).limit(query.limit + 1)).all()
    more = len(rows) > query.limit
    items = [(row[0], row[1], int(row[2] or 0)) for row in rows[:query.limit]]
    return CatalogPage(items, facet_counts(session, query), total,
                       _encode_cursor(offset + query.limit) if more else None)


def facet_counts(session: Session, query: CatalogQuery) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for name, column in FACETS.items():
        stmt = _base(query, skip_facet=name)
        if stmt is None:
            counts[name] = {}
            continue
        if name == "model":
            stmt = stmt.join(Offer, (Offer.dataset_id == Dataset.id) & Offer.retired_at.is_(None))
        sub = stmt.with_only_columns(Dataset.id.label("dataset_id"), column.label("value")) \
                  .distinct().subquery()
        rows = session.execute(select(sub.c.value, func.count()).group_by(sub.c.value)
                               .order_by(func.count().desc(), sub.c.value)).all()
        counts[name] = {value: count for value, count in rows}
    return counts
