"""The supplier uploads a folder of files in resumable parts: one part's request is cut off,
the page is reloaded and the same folder chosen again, only the missing parts are sent, and the
version made of the files shows its manifest with token counts."""

from __future__ import annotations

import os
import re

from playwright.sync_api import expect

from tests.e2e.test_accessibility import axe_violations, describe
from tests.e2e.test_journeys import SUPPLIER, supplier_creates_dataset
from tests.market.catalog.test_media import make_image


def test_supplier_uploads_a_folder_interrupts_resumes_and_makes_a_version(signed_in, tmp_path):
    folder = tmp_path / "survey"
    folder.mkdir()
    (folder / "notes.txt").write_text("substation notes\n" * 50)
    (folder / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))  # two parts of 8 MiB
    make_image(folder / "photo.png", 640, 480)

    page = signed_in(SUPPLIER, bypass_csp=True)  # axe-core is injected below
    dataset_id = supplier_creates_dataset(page, "Survey files", "巡检文件")
    page.goto(f"/supplier/datasets/{dataset_id}/files")
    violations = axe_violations(page)
    assert not violations, describe(violations)

    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "PUT" else None)
    cut = {"done": False}

    def cut_once(route):
        if not cut["done"]:
            cut["done"] = True
            route.abort()
        else:
            route.continue_()
    page.route(re.compile(r".*/parts/2$"), cut_once)
    page.locator("#pick-folder").set_input_files(folder)
    expect(page.locator("#files-status")).to_contain_text("interrupted", timeout=30_000)

    page.reload()
    page.locator("#pick-folder").set_input_files(folder)
    expect(page.locator("#files-status")).to_have_text("All files uploaded.", timeout=30_000)
    big_first_parts = [u for u in sent if u.endswith("/parts/1")]
    # big.bin's first part went once: the resumed upload sent only what was missing
    assert len([u for u in sent if u.endswith("/parts/2")]) == 2
    assert len(big_first_parts) == len(set(big_first_parts))

    page.locator("#make-version").click()
    page.wait_for_url(re.compile(r"/versions/\d+"))
    manifest = page.locator("table.manifest")
    expect(manifest).to_contain_text("survey/photo.png")
    expect(manifest).to_contain_text("640×480")
    expect(manifest).to_contain_text("survey/big.bin")
    expect(manifest).to_contain_text("bytes-per-token/4")
    violations = axe_violations(page)
    assert not violations, describe(violations)
