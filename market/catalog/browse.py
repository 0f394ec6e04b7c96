"""What buyers browse: listed datasets, searched, filtered, faceted, sorted and paged.

Facet counts are "disjunctive": each facet counts the datasets matching the query and every
other filter, so choosing a sector still shows how many datasets the other sectors have.
Pages follow the sort in one stable total order (``market.core.keyset``; the dataset's id last), so
a cursor is the position after the last dataset shown, whatever was listed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from sqlalchemy import Select, func, literal, select
from sqlalchemy.orm import Session

from market.catalog import search
from market.catalog.models import Dataset, DatasetVersion, Listing, ListingStatus, Offer
from market.core.errors import InvalidInput
from market.core.keyset import DEFAULT_LIMIT, Key, Keyset, PageRequest, asc, desc

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
    limit: int = DEFAULT_LIMIT


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


def _order(query: CatalogQuery, stmt: Select) -> list[Key]:
    """The sort's keys, the newest listing first among equals, the dataset's id last."""
    newest = [desc(Listing.listed_at), desc(Dataset.id)]
    if query.sort == "quality":
        return [desc(DatasetVersion.quality_score), *newest]
    if query.sort == "price":
        # Lowest active headline price first; datasets without a price last.
        return [asc(_lowest_price(), nullable=True), *newest]
    if query.sort == "relevance" and query.q.strip():
        return [desc(stmt.selected_columns.relevance, nullable=False), *newest]
    return newest


def browse(session: Session, query: CatalogQuery) -> CatalogPage:
    """Listed datasets matching the query, with facet counts."""
    unknown = set(query.filters) - set(FACETS)
    if unknown:
        raise InvalidInput(f"Cannot filter by {sorted(unknown)[0]!r}.", field=sorted(unknown)[0])
    if query.sort not in SORTS:
        raise InvalidInput(f"Sort by one of {', '.join(SORTS)}.", field="sort")
    stmt = _base(query)
    if stmt is None:
        return CatalogPage([], {name: {} for name in FACETS}, 0, None)

    total = session.scalar(select(func.count()).select_from(stmt.subquery()))
    page = Keyset(session, stmt, _order(query, stmt)).page(PageRequest(query.cursor, query.limit))
    items = [(dataset, version, int(relevance or 0)) for dataset, version, relevance in page.items]
    return CatalogPage(items, facet_counts(session, query), total, page.next_cursor)


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
