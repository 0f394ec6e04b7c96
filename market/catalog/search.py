"""Catalogue search that works the same for Chinese and English on SQLite and PostgreSQL.

Neither database tokenizes Chinese out of the box, so the catalogue keeps its own inverted index
(``search_terms``). Text is normalized (NFKC, lower case) and cut into terms:

- a run of Han characters gives every character and every pair of neighbours (bigrams), so
  "医疗影像数据集" is found by "医疗", "影像" or "医疗影像" (a query's run is matched by its bigrams);
- a run of letters and digits gives one word, with a plain English plural "s" removed, so
  "datasets" and "dataset" are the same term.

Each term is weighted by where it occurs (title 10, summary 4, sector and modality labels 3,
description 1). A query matches a dataset when every query term is in its index, and relevance is
the sum of the matched terms' weights.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Iterable

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from market.catalog.models import Dataset, SearchTerm
from market.catalog.taxonomy import AI_STAGES, MODALITIES, SECTORS

_RUNS = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+")
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_STOPWORDS = frozenset({"a", "an", "and", "the", "of", "for", "in", "on", "to", "with", "by",
                        "or", "is", "are", "from", "at", "as"})
MAX_TERM_LENGTH = 64

WEIGHTS = {"title": 10, "summary": 4, "taxonomy": 3, "description": 1}


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower()


def _word(word: str) -> str:
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def index_terms(text: str) -> Counter[str]:
    """The terms a text is indexed under, with how often each occurs."""
    terms: Counter[str] = Counter()
    for run in _RUNS.findall(_normalize(text)):
        if _HAN.match(run):
            terms.update(run)
            terms.update(run[i:i + 2] for i in range(len(run) - 1))
        elif run not in _STOPWORDS:
            terms[_word(run)[:MAX_TERM_LENGTH]] += 1
    return terms


def query_terms(query: str) -> list[str]:
    """The terms a query must all match: bigrams of Han runs (a lone character as itself)."""
    terms: list[str] = []
    for run in _RUNS.findall(_normalize(query)):
        if _HAN.match(run):
            terms += [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]
        elif run not in _STOPWORDS:
            terms.append(_word(run)[:MAX_TERM_LENGTH])
    return list(dict.fromkeys(terms))


def _dataset_fields(dataset: Dataset) -> Iterable[tuple[str, str]]:
    yield "title", f"{dataset.title_zh} {dataset.title_en}"
    yield "summary", f"{dataset.summary_zh} {dataset.summary_en}"
    yield "description", f"{dataset.description_zh} {dataset.description_en}"
    for vocabulary, code in ((SECTORS, dataset.sector), (MODALITIES, dataset.modality),
                             (AI_STAGES, dataset.ai_stage)):
        term = vocabulary.get(code)
        if term is not None:
            yield "taxonomy", f"{term.zh} {term.en}"


def reindex(session: Session, dataset: Dataset) -> None:
    """Replace a dataset's index entries with those of its current text."""
    weights: Counter[str] = Counter()
    for field, text in _dataset_fields(dataset):
        for term, count in index_terms(text).items():
            weights[term] += WEIGHTS[field] * min(count, 3)  # repeating a word buys little
    session.execute(delete(SearchTerm).where(SearchTerm.dataset_id == dataset.id))
    if weights:
        session.execute(insert(SearchTerm), [
            {"dataset_id": dataset.id, "term": term, "weight": weight}
            for term, weight in sorted(weights.items())])


def matching(query: str):
    """A subquery of (dataset_id, relevance) for datasets matching every term; None: no terms."""
    terms = query_terms(query)
    if not terms:
        return None
    return (select(SearchTerm.dataset_id.label("dataset_id"),
                   func.sum(SearchTerm.weight).label("relevance"))
            .where(SearchTerm.term.in_(terms))
            .group_by(SearchTerm.dataset_id)
            .having(func.count(SearchTerm.term) == len(terms))
            .subquery())
