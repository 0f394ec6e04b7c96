"""Demo datasets of files: images, audio and time series, generated on the spot (no download).

Every file is made here from a seeded random generator, so two runs make the same bytes (and
the object store, content-addressed, keeps one copy). Each dataset becomes a version of files
through the same path as a supplier's upload (``market.catalog.files``: upload, completion,
counting, the version and its quality report), gets a metered offer and is listed. The images
hold one near-duplicate (a brightened JPEG of the first picture) and the time series one
gap, so their quality reports have findings to show.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import struct
import wave
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from PIL import Image, ImageDraw
from sqlalchemy import select
from sqlalchemy.orm import Session

from market.accounts import services as accounts
from market.accounts.models import Organization, User
from market.catalog import files, listings, offers
from market.catalog import services as catalog
from market.catalog.models import Dataset
from market.catalog.timeseries import TIME_SERIES_MEDIA_TYPE
from market.core.objects import ObjectStore

GeneratedFile = tuple[str, str, bytes]  # (path, media type, content)


def insulator_images(count: int = 24) -> list[GeneratedFile]:
    """Aerial-inspection style scenes of towers and insulators, PNG and JPEG, 160×120 to
    320×240, with one near-duplicate (the first scene retaken brighter, as JPEG)."""
    rng = random.Random(2026)
    made: list[GeneratedFile] = []
    first = None
    for i in range(count):
        width, height = rng.choice([(160, 120), (240, 180), (320, 240)])
        image = Image.new("RGB", (width, height))
        draw = ImageDraw.Draw(image)
        sky = (rng.randrange(80, 160), rng.randrange(120, 200), rng.randrange(180, 255))
        for y in range(height):  # a sky fading to the horizon
            shade = y * 60 // height
            draw.line([(0, y), (width, y)], fill=(sky[0] + shade // 2, sky[1] + shade // 2,
                                                 min(255, sky[2] + shade // 3)))
        ground = height * rng.randrange(55, 80) // 100
        draw.rectangle([0, ground, width, height],
                       fill=(rng.randrange(40, 90), rng.randrange(80, 140), rng.randrange(30, 70)))
        for _ in range(rng.randrange(1, 4)):  # lattice towers with insulator strings
            x = rng.randrange(width // 8, width * 7 // 8)
            top = rng.randrange(height // 10, height // 3)
            draw.polygon([(x, top), (x - width // 12, ground), (x + width // 12, ground)],
                         outline=(70, 70, 80), width=2)
            draw.line([(x - width // 6, top + 8), (x + width // 6, top + 8)], fill=(60, 60, 70),
                      width=3)
            for side in (-1, 1):
                cx = x + side * width // 7
                colour = (200, 60, 40) if rng.random() < 0.3 else (210, 210, 220)
                for k in range(4):
                    draw.ellipse([cx - 4, top + 10 + 6 * k, cx + 4, top + 14 + 6 * k],
                                 fill=colour)
        kind, media_type, extension = (("PNG", "image/png", "png") if i % 3
                                       else ("JPEG", "image/jpeg", "jpg"))
        made.append((f"images/tower-{i:03d}.{extension}", media_type,
                     _encoded(image, kind, quality=88)))
        if first is None:
            first = image
    brighter = first.point(lambda value: min(255, value + 8))
    made.append(("images/tower-000_retake.jpg", "image/jpeg", _encoded(brighter, "JPEG",
                                                                    quality=80)))
    return made


def _encoded(image: Image.Image, kind: str, **options) -> bytes:
    out = io.BytesIO()
    if kind == "PNG":
        image.save(out, kind, optimize=False)
    else:
        image.save(out, kind, **options)
    return out.getvalue()


def transformer_audio(count: int = 6, rate: int = 16_000) -> list[GeneratedFile]:
    """Transformer hum recordings: 16 kHz mono 16-bit WAV, 2–4 s each, a 50 Hz fundamental
    with harmonics and a little noise."""
    rng = random.Random(50)
    made: list[GeneratedFile] = []
    for i in range(count):
        seconds = 2 + i % 3
        harmonics = [(50 * k, rng.uniform(0.05, 0.4) / k) for k in (1, 2, 3, 4, 6)]
        noise = rng.uniform(0.005, 0.03)
        samples = bytearray()
        for n in range(rate * seconds):
            t = n / rate
            value = sum(amp * math.sin(2 * math.pi * freq * t) for freq, amp in harmonics)
            value += rng.uniform(-noise, noise)
            samples += struct.pack("<h", max(-32767, min(32767, int(value * 20_000))))
        out = io.BytesIO()
        with wave.open(out, "wb") as recording:
            recording.setnchannels(1)
            recording.setsampwidth(2)
            recording.setframerate(rate)
            recording.writeframes(bytes(samples))
        made.append((f"audio/substation-{i + 1:02d}.wav", "audio/wav", out.getvalue()))
    return made


def feeder_readings(count: int = 4, rows: int = 720) -> list[GeneratedFile]:
    """Feeder sensor readings, one a minute: voltage (kV), current (A) and temperature (°C),
    as the time-series CSV (``market.catalog.timeseries``); the last feeder misses half an hour
    and one temperature reading."""
    rng = random.Random(10)
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    made: list[GeneratedFile] = []
    for feeder in range(1, count + 1):
        lines = ["timestamp,voltage_kv,current_a,temperature_c"]
        base_current = rng.uniform(120, 380)
        for minute in range(rows):
            if feeder == count and 300 <= minute < 330:
                continue  # the logger was offline
            moment = start + timedelta(minutes=minute)
            daily = math.sin(2 * math.pi * minute / 1440)
            voltage = 10.5 + 0.2 * daily + rng.uniform(-0.05, 0.05)
            current = base_current * (1 + 0.3 * daily) + rng.uniform(-5, 5)
            temperature = 24 + 6 * daily + rng.uniform(-0.3, 0.3)
            shown = "" if feeder == count and minute == 100 else f"{temperature:.2f}"
            lines.append(f"{moment:%Y-%m-%dT%H:%M:%SZ},{voltage:.3f},{current:.1f},{shown}")
        made.append((f"series/feeder-{feeder:02d}.csv", TIME_SERIES_MEDIA_TYPE,
                     ("\n".join(lines) + "\n").encode("utf-8")))
    return made


@dataclass(frozen=True)
class DemoFileDataset:
    title_zh: str
    title_en: str
    summary_zh: str
    summary_en: str
    sector: str
    modality: str
    ai_stage: str
    make_files: Callable[[], list[GeneratedFile]]
    price_per_million: str


DEMO_FILE_DATASETS = (
    DemoFileDataset("输电线路巡检图像", "Transmission line inspection images",
                    "无人机巡检拍摄的杆塔与绝缘子图像", "Drone photos of towers and insulators",
                    "smart_energy", "image", "pretraining", insulator_images, "40"),
    DemoFileDataset("变电站设备声纹", "Substation equipment acoustics",
                    "变压器运行声音录音（16 kHz）", "Transformer hum recordings at 16 kHz",
                    "smart_energy", "audio", "pretraining", transformer_audio, "25"),
    DemoFileDataset("配电线路传感器时序数据", "Feeder sensor time series",
                    "配电线路每分钟的电压、电流与温度读数",
                    "Per-minute voltage, current and temperature of distribution feeders",
                    "smart_energy", "time_series", "pretraining", feeder_readings, "15"),
)


def seed_demo_file_datasets(session: Session, store: ObjectStore) -> list[str]:
    """The demo file datasets, each a listed version of its generated files with its quality
    report and a metered offer; one already there is left as it is."""
    orgs = {o.slug: o for o in session.scalars(select(Organization))}
    people = {u.email: u for u in session.scalars(select(User))}
    supplier = accounts.principal_for_user(people["supplier@demo.market"],
                                           orgs["demo-supplier"].id)
    reviewer = accounts.principal_for_user(people["reviewer@demo.market"],
                                           orgs["demo-exchange"].id)
    created = []
    for spec in DEMO_FILE_DATASETS:
        if session.scalar(select(Dataset.id).where(
                Dataset.organization_id == supplier.organization_id,
                Dataset.title_en == spec.title_en)) is not None:
            continue
        dataset = catalog.create_dataset(session, supplier, {
            "title_zh": spec.title_zh, "title_en": spec.title_en, "summary_zh": spec.summary_zh,
            "summary_en": spec.summary_en, "description_zh": spec.summary_zh,
            "description_en": spec.summary_en, "sector": spec.sector,
            "modality": spec.modality, "ai_stage": spec.ai_stage, "languages": ["zh", "en"],
            "licence": "commercial_standard", "personal_information": "none",
            "sensitivity": "general", "rights": {
                "holding": "Grid Sensor Data Co.", "usage": "Grid Sensor Data Co.",
                "operation": "Demo Data Exchange"}})
        uploads = []
        for path, media_type, data in spec.make_files():
            upload = files.start_upload(session, supplier, store, dataset, path=path,
                                        media_type=media_type, size=len(data),
                                        sha256=hashlib.sha256(data).hexdigest())
            files.upload_part(store, upload, 1, data)
            uploads.append(files.complete_upload(session, supplier, store, upload).id)
        version = files.create_file_version(session, supplier, dataset, uploads,
                                            notes="generated demo files", store=store)
        catalog.set_supply_chain(session, supplier, dataset, [
            {"organization_id": orgs["demo-supplier"].id, "role": "supplier", "share_bps": 7_000},
            {"organization_id": orgs["demo-exchange"].id, "role": "exchange", "share_bps": 2_000},
            {"organization_id": orgs["demo-channel"].id, "role": "channel", "share_bps": 1_000}],
            note="demo")
        offers.add_offer(session, supplier, dataset, {
            "kind": "metered", "code": "api", "mode": "graduated", "tiers": [
                {"from_tokens": 0, "up_to": None,
                 "price_per_million": {"amount": spec.price_per_million, "currency": "CNY"}}]})
        listing = listings.submit(session, supplier, dataset, version_id=version.id,
                                  exchange_id=orgs["demo-exchange"].id, review_days=5)
        listings.approve(session, reviewer, listing, note="Checked.")
        created.append(f"{spec.title_en} ({version.record_count} files, "
                       f"{version.token_count:,} tokens, quality {version.quality_grade})")
    return created
