"""Search and facets over listed datasets, in Chinese and English, on both databases."""

from __future__ import annotations

import pytest

from market.catalog import search
from tests.market.catalog.conftest import RECORDS, create_dataset, import_file, jsonl, set_chain


@pytest.mark.parametrize("text, query, found", [
    ("医疗影像数据集", "医疗", True),
    ("医疗影像数据集", "影像数据", True),
    ("医疗影像数据集", "医", True),
    ("医疗影像数据集", "疗医", False),
    ("Power grid sensor datasets", "dataset", True),
    ("Power grid sensor datasets", "GRID Sensors", True),
    ("Power grid sensor datasets", "grids power", True),
    ("Power grid sensor datasets", "solar", False),
])
def test_terms(text, query, found):
    indexed = search.index_terms(text)
    assert all(term in indexed for term in search.query_terms(query)) is found


@pytest.fixture()
def listed(supplier_client, reviewer_client, supplier, exchange):
    """Three listed datasets and one unlisted one."""
    specs = [
        dict(title_zh="医疗影像数据集", title_en="Medical imaging dataset", sector="healthcare"),
        dict(title_zh="电网传感器时序数据", title_en="Power grid sensor time series",
             sector="smart_energy", modality="time_series", summary_en="Grid sensors, 1 Hz",
             summary_zh="电网传感器"),
        dict(title_zh="医保结算问答", title_en="Medical insurance claims Q&A",
             sector="financial_services"),
        dict(title_zh="未上架的医疗数据", title_en="Unlisted medical data", sector="healthcare"),
    ]
    ids = []
    for n, spec in enumerate(specs):
        dataset = create_dataset(supplier_client, **spec)
        import_file(supplier_client, dataset["id"], jsonl(RECORDS * (n + 1)))
        set_chain(supplier_client, dataset["id"], [
            {"organization_id": supplier.id, "role": "supplier", "share_bps": 10_000}])
        ids.append(dataset["id"])
        if n == 3:
            continue
        listing = supplier_client.post(f"/api/v1/datasets/{dataset['id']}/listing",
                                       json={"version": 1, "exchange_id": exchange.id},
                                       headers=supplier_client.csrf).get_json()
        reviewer_client.post(f"/api/v1/listings/{listing['id']}/approve", json={},
                             headers=reviewer_client.csrf)
    return ids


def _search(client, **params):
    response = client.get("/api/v1/datasets", query_string=params)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_chinese_query_finds_chinese_titles(supplier_client, listed):
    page = _search(supplier_client, q="医疗")
    titles = {item["dataset"]["title_zh"] for item in page["items"]}
    assert titles == {"医疗影像数据集"}
    assert "未上架的医疗数据" not in titles
    assert page["items"][0]["dataset"]["title_zh"] == "医疗影像数据集"


def test_english_query(supplier_client, listed):
    page = _search(supplier_client, q="grid sensors")
    assert [i["dataset"]["title_en"] for i in page["items"]] == ["Power grid sensor time series"]


def test_facets_count_listed_datasets_only(supplier_client, listed):
    page = _search(supplier_client)
    assert page["total"] == 3
    assert page["facets"]["sector"] == {"healthcare": 1, "smart_energy": 1,
                                        "financial_services": 1}
    filtered = _search(supplier_client, sector="healthcare")
    assert filtered["total"] == 1
    # The sector facet still counts the other sectors (disjunctive faceting).
    assert filtered["facets"]["sector"]["smart_energy"] == 1
    assert filtered["facets"]["modality"] == {"text": 1}


def test_cursor_pagination_visits_every_dataset_once(supplier_client, listed):
    seen, cursor = [], None
    while True:
        params = {"limit": 1, "sort": "newest"} | ({"cursor": cursor} if cursor else {})
        page = _search(supplier_client, **params)
        seen += [i["dataset"]["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(listed[:3]) and len(seen) == 3


@pytest.mark.parametrize("params", [{"sort": "quality"}, {"sort": "price"},
                                    {"sort": "relevance", "q": "medical"}])
def test_every_sort_pages_through_the_same_datasets_as_one_page(supplier_client, listed, params):
    """The price sort's key is null for datasets without an active price (all of these)."""
    whole = [i["dataset"]["id"] for i in _search(supplier_client, limit=200, **params)["items"]]
    seen, cursor = [], None
    while True:
        page = _search(supplier_client, limit=1, **params, **({"cursor": cursor} if cursor else {}))
        assert page["total"] == len(whole)
        seen += [i["dataset"]["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole and len(set(seen)) == len(whole) > 1


def test_a_cursor_of_another_sort_is_refused(supplier_client, listed):
    cursor = _search(supplier_client, limit=1, sort="newest")["next_cursor"]
    response = supplier_client.get("/api/v1/datasets", query_string={
        "sort": "quality", "cursor": cursor})
    assert response.status_code == 422 and "cursor" in response.get_json()["errors"]


def test_bad_search_parameters_are_named(supplier_client, listed):
    for params, field in (({"sector": "moon"}, "sector"), ({"sort": "price_up"}, "sort"),
                          ({"cursor": "garbage"}, "cursor"), ({"limit": 0}, "limit")):
        response = supplier_client.get("/api/v1/datasets", query_string=params)
        assert response.status_code == 422 and field in response.get_json()["errors"], params


def test_catalogue_page_searches_in_chinese(client, listed):
    page = client.get("/catalog", query_string={"q": "医疗"}).get_data(as_text=True)
    assert "Medical imaging dataset" in page and "Unlisted medical data" not in page
    dataset_page = client.get(f"/datasets/{listed[0]}").get_data(as_text=True)
    assert "Quality report" in dataset_page and "<meter" in dataset_page
