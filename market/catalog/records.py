"""Reading a version's stored records: paged by cursor, and searched.

A cursor is the ``seq`` of the last record of the previous page, so a page costs one index range
scan however deep it is. Search is a case-insensitive substring match over the canonical JSON of
each record, which works the same for Chinese and English on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from market.catalog.models import DatasetRecord, DatasetVersion
from market.core.errors import InvalidInput

MAX_PAGE = 1000


@dataclass(frozen=True)
class RecordPage:
    records: list[DatasetRecord]
    next_cursor: int | None


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"Ask for 1 to {MAX_PAGE} records.", field="limit")


def page_records(session: Session, version: DatasetVersion, *, after: int = -1,
                 limit: int = 100) -> RecordPage:
    """Records after the cursor, in file order."""
    _check_limit(limit)
    rows = session.scalars(
        select(DatasetRecord).where(DatasetRecord.version_id == version.id,
                                    DatasetRecord.seq > after)
        .order_by(DatasetRecord.seq).limit(limit + 1)).all()
    page = list(rows[:limit])
    return RecordPage(page, page[-1].seq if len(rows) > limit else None)


def _like_pattern(query: str) -> str:
    escaped = query.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_records(session: Session, version: DatasetVersion, query: str, *, after: int = -1,
                   limit: int = 20) -> RecordPage:
    """Records whose canonical JSON contains the query (ignoring case), in file order."""
    _check_limit(limit)
    query = query.strip()
    if not query or len(query) > 200:
        raise InvalidInput("Search for 1 to 200 characters.", field="query")
    rows = session.scalars(
        select(DatasetRecord).where(
            DatasetRecord.version_id == version.id, DatasetRecord.seq > after,
            func.lower(DatasetRecord.data).like(_like_pattern(query), escape="\\"))
        .order_by(DatasetRecord.seq).limit(limit + 1)).all()
    page = list(rows[:limit])
    return RecordPage(page, page[-1].seq if len(rows) > limit else None)
