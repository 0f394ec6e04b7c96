"""The supplier uploads a folder of two text files and a picture: one file's part is cut off on
the way, the page is reloaded and the same folder chosen again; the cut file's upload is
resumed (its parts listed, only the missing one sent, no second upload started), and the
version made of the files shows its manifest with each file's token count."""

from __future__ import annotations

import math
import re

from playwright.sync_api import expect

from tests.e2e.test_accessibility import axe_violations, describe
from tests.e2e.test_journeys import SUPPLIER, supplier_creates_dataset
from tests.market.catalog.test_media import make_image

NOTES = "Substation 7: transformer oil sampled, breaker tested.\n" * 20
README = "巡检记录：每周一次，记录油温与负荷。\n" * 10


def test_supplier_uploads_a_folder_interrupts_resumes_and_makes_a_version(signed_in, tmp_path):
    folder = tmp_path / "survey"
    folder.mkdir()
    (folder / "notes.txt").write_text(NOTES, encoding="utf-8")
    (folder / "readme.txt").write_text(README, encoding="utf-8")
    make_image(folder / "photo.png", 640, 480)

    page = signed_in(SUPPLIER, bypass_csp=True)  # axe-core is injected below
    dataset_id = supplier_creates_dataset(page, "Survey files", "巡检文件")
    page.goto(f"/supplier/datasets/{dataset_id}/files")
    violations = axe_violations(page)
    assert not violations, describe(violations)

    sent: list[tuple[str, str]] = []
    page.on("request", lambda r: sent.append((r.method, r.url)) if "/supplier/" in r.url
            else None)
    cut: list[str] = []

    def cut_once(route):
        if not cut:
            cut.append(route.request.url)
            route.abort()
        else:
            route.continue_()
    page.route(re.compile(r".*/supplier/uploads/\d+/parts/\d+$"), cut_once)
    page.locator("#pick-folder").set_input_files(folder)
    expect(page.locator("#files-status")).to_contain_text("interrupted", timeout=30_000)
    assert len(cut) == 1
    cut_upload = re.search(r"/uploads/(\d+)/", cut[0]).group(1)

    page.reload()
    page.locator("#pick-folder").set_input_files(folder)
    expect(page.locator("#files-status")).to_have_text("All files uploaded.", timeout=30_000)
    expect(page.locator("#files-progress")).to_have_attribute("value", "100")
    starts = [u for m, u in sent if m == "POST" and u.endswith(f"/datasets/{dataset_id}/uploads")]
    assert len(starts) == 3  # one per file: the cut one was resumed, not started again
    assert ("GET", cut[0].rsplit("/", 1)[0]) in sent  # its parts were listed on resuming
    assert [u for m, u in sent if m == "PUT" and f"/uploads/{cut_upload}/" in u] == cut * 2

    page.locator("#make-version").click()
    page.wait_for_url(re.compile(r"/versions/\d+"))
    manifest = page.locator("table.manifest")
    # a text file by its size (one token per 4 bytes), the picture by OpenAI's tile rule:
    # 640×480 needs no scaling down, so two 512-px tiles by one: 85 + 170 × 2
    for path, text in (("survey/notes.txt", NOTES), ("survey/readme.txt", README)):
        row = manifest.locator("tr", has_text=path)
        expect(row).to_contain_text(f"{math.ceil(len(text.encode()) / 4):,}")
        expect(row).to_contain_text("bytes-per-token/4")
    photo = manifest.locator("tr", has_text="survey/photo.png")
    expect(photo).to_contain_text("640×480")
    expect(photo).to_contain_text(f"{85 + 170 * 2:,}")
    expect(photo).to_contain_text("openai-image-tiles/2024-11")
    proof = manifest.locator("tr", has_text="survey/photo.png").get_by_role("link")
    assert re.search(r"/versions/\d+/files/proof\?path=survey/photo.png$",
                     proof.get_attribute("href"))
    violations = axe_violations(page)
    assert not violations, describe(violations)
