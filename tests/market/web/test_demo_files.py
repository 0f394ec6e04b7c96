"""The demo's datasets of files: images, audio and a time series, generated, counted, checked and
listed; the storefront shows each one's quality report and its findings, in both languages."""

from __future__ import annotations

from sqlalchemy import select

from market.catalog.models import Dataset, VersionFile
from market.web.cli.demo_files import DEMO_FILE_DATASETS, insulator_images
from tests.factories import english_client


def test_the_generated_files_are_the_same_every_time():
    assert insulator_images() == insulator_images()


def test_the_demo_lists_a_dataset_of_each_modality_with_its_report(runner, session, app):
    result = runner.invoke(args=["market", "seed-demo"])
    assert result.exit_code == 0, result.output
    made = {d.modality: d for d in session.scalars(select(Dataset).where(
        Dataset.title_en.in_([spec.title_en for spec in DEMO_FILE_DATASETS])))}
    assert set(made) == {"image", "audio", "time_series"}
    for dataset in made.values():
        assert dataset.listing.status == "approved"
        version = dataset.listing.version
        assert version.source_format == "files" and version.token_count > 0
        assert version.quality["overall"]["grade"] == version.quality_grade != "-"
        assert [o.kind for o in dataset.active_offers] == ["metered"]
    profiles = set(session.scalars(select(VersionFile.token_profile)))
    assert {"openai-image-tiles/2024-11", "gemini-audio/2025-01",
            "time-series-csv/o200k_base"} <= profiles
    near = made["image"].listing.version.quality["images"]["perceptual_duplicates"]
    assert [f["path"] for f in near["listed"]] == ["images/tower-000_retake.jpg"]

    english = english_client(app)
    catalogue = english.get("/catalog").get_data(as_text=True)
    assert all(spec.title_en in catalogue for spec in DEMO_FILE_DATASETS)
    page = english.get(f"/datasets/{made['image'].id}").get_data(as_text=True)
    assert "Perceptual duplicates (1)" in page and "images/tower-000_retake.jpg" in page
    assert "Media type matches content" in page
    series = english.get(f"/datasets/{made['time_series'].id}").get_data(as_text=True)
    assert "Gaps (1)" in series and "series/feeder-04.csv" in series

    chinese = app.test_client()
    chinese.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    page = chinese.get(f"/datasets/{made['image'].id}").get_data(as_text=True)
    assert "感知重复 (1)" in page and "媒体类型与内容一致" in page

