"""Import throughput against plain token counting, and peak memory, on a generated JSONL file.

    python bench/import.py                 # 1 GiB file (generated once into bench/.cache)
    python bench/import.py --size-mb 100   # a quicker run
    python bench/import.py --pathological  # records that must be refused, quickly

In one run it measures, on the same file:

- plain tiktoken: a counting script over the same records (read each line, serialize it
  canonically, count batches with ``encode_ordinary_batch`` on every core), and separately the
  time spent inside tiktoken alone;
- the marketplace's import: the same file through ``market.catalog.importer.import_version``
  into a fresh SQLite database (parse, canonicalize, count, hash, profile, quality report,
  store), as ``flask`` or the API runs it;

and prints both rates in MB/s, their ratio, and the import's peak memory (resident set, read
from the kernel while it runs). The target is a ratio of at least 0.8 and a peak under 300 MB.

``--pathological`` imports, each in a fresh interpreter, files no import may spend much on: one
line of 200 MB (a single record), and a record of 1,000,000 spaces (under the record limit, but
tiktoken panics on it). Each must be refused within 2 s with a peak resident set under 300 MB;
it prints the answer, the time and the peak (the whole process's, interpreter included).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = ROOT / "bench" / ".cache"

ZH = ("电网 负荷 调度 变电站 医疗 影像 报告 诊断 结节 农业 病虫害 防控 金融 风控 授信 城市 治理 工单 "
      "交通 智能 驾驶 场景 行人 车道 数据 模型 训练 质量 标注 评测 知识 检索 气象 降水 预报 能源 "
      "低空 无人机 航线 海洋 生物 制造 教育 课程 电商 商品 评论 应急 管理 预案 住房 建设 资源").split()
EN = ("grid load dispatch substation medical imaging report diagnosis nodule agriculture pest "
      "finance credit risk city governance ticket traffic driving scene pedestrian lane data "
      "model training quality annotation evaluation knowledge retrieval weather rainfall energy "
      "drone route ocean manufacturing course product review emergency plan housing").split()


def generate(path: Path, size_bytes: int) -> None:
    rng = random.Random(2026)
    written = 0
    with path.open("w", encoding="utf-8") as out:
        i = 0
        while written < size_bytes:
            zh = "".join(rng.choice(ZH) for _ in range(rng.randint(20, 120)))
            en = " ".join(rng.choice(EN) for _ in range(rng.randint(20, 120)))
            record = {"id": i, "instruction": zh[: len(zh) // 3] + "？",
                      "input": en, "response": zh, "label": rng.choice(["a", "b", "c"])}
            line = json.dumps(record, ensure_ascii=False) + "\n"
            out.write(line)
            written += len(line.encode("utf-8"))
            i += 1


class PeakRss:
    """Samples the process's resident set size while a block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as statm:
                self.peak = max(self.peak, int(statm.read().split()[1]) * page)
            self._stop.wait(0.05)

    def __enter__(self) -> "PeakRss":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def plain_tiktoken(path: Path, encoding_name: str, batch: int = 2000) -> tuple[float, float, int]:
    """A plain counting script over the same records: read each line, serialize the record
    canonically, count batches with ``encode_ordinary_batch`` on every core.

    Returns the script's wall time, the part of it spent inside tiktoken alone, and the tokens.
    """
    from pricing.tokens import canonical_json, get_encoding

    encoding = get_encoding(encoding_name)
    threads = os.cpu_count() or 1
    total = 0
    encoding_seconds = 0.0

    def count(texts: list[str]) -> int:
        nonlocal encoding_seconds
        started = time.perf_counter()
        tokens = sum(map(len, encoding.encode_ordinary_batch(texts, num_threads=threads)))
        encoding_seconds += time.perf_counter() - started
        return tokens

    started = time.perf_counter()
    lines: list[str] = []
    with path.open("r", encoding="utf-8") as source:
        for line in source:
            lines.append(canonical_json(json.loads(line)))
            if len(lines) == batch:
                total += count(lines)
                lines = []
    if lines:
        total += count(lines)
    return time.perf_counter() - started, encoding_seconds, total


def bench_dataset(url: str):
    """A fresh database at ``url`` with a supplier and an empty dataset to import into."""
    from market.accounts.authz import SCOPES, Principal
    from market.accounts.services import create_organization
    from market.catalog import services as catalog
    from market.core.db import Database
    from market.web.schema import upgrade

    upgrade(url)
    database = Database(url)
    with database.session() as session, session.begin():
        org = create_organization(session, name="Bench", roles=["supplier"])
        session.flush()
        principal = Principal(organization_id=org.id, member_role="owner",
                              scopes=frozenset(SCOPES), org_roles=frozenset({"supplier"}))
        dataset = catalog.create_dataset(session, principal, {
            "title_zh": "基准", "title_en": "Bench", "sector": "smart_energy",
            "modality": "text", "ai_stage": "instruction_tuning",
            "licence": "research_only", "personal_information": "none",
            "sensitivity": "general", "label_field": "label"})
    return database, principal, dataset


def marketplace_import(path: Path, encoding_name: str) -> tuple[float, int, int]:
    from market.catalog import importer

    with tempfile.TemporaryDirectory() as tmp:
        database, principal, dataset = bench_dataset(f"sqlite:///{tmp}/bench.db")
        with PeakRss() as rss:
            started = time.perf_counter()
            with database.session() as session, session.begin():
                dataset = session.merge(dataset)
                with path.open("rb") as stream:
                    version = importer.import_version(
                        session, principal, dataset, stream, source_format="jsonl",
                        encoding=encoding_name, expected_bytes=path.stat().st_size)
                tokens = version.token_count
            elapsed = time.perf_counter() - started
        database.dispose()
    # The counting child has exited by now; its peak adds to ours (an upper bound: the two
    # peaks need not have happened at the same moment).
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return elapsed, tokens, rss.peak, child_peak


PATHOLOGICAL = {
    "one 200 MB line": "line-200mb.jsonl",
    "1,000,000 spaces": "spaces-1m.jsonl",
}


def generate_pathological(path: Path) -> None:
    with path.open("wb") as out:
        if path.name == "line-200mb.jsonl":
            out.write(b'{"text": "')
            block = b"x" * (1 << 20)
            for _ in range(200):
                out.write(block)
            out.write(b'"}\n')
        else:
            out.write(b'{"text": "' + b" " * 1_000_000 + b'"}\n')


def refused_import(path: Path, encoding_name: str) -> dict:
    """Import one pathological file in this (fresh) process, as the API does (with the default
    limits); how it was answered, how fast, and the process's peak resident set."""
    from market.catalog import importer
    from market.core.errors import MarketError
    from pricing.tokens import get_encoding

    with tempfile.TemporaryDirectory() as tmp:
        database, principal, dataset = bench_dataset(f"sqlite:///{tmp}/bench.db")
        get_encoding(encoding_name)  # built once per worker, before any request
        with open("/proc/self/statm") as statm:
            before = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        started = time.perf_counter()
        try:
            with database.session() as session, session.begin(), path.open("rb") as stream:
                importer.import_version(session, principal, session.merge(dataset), stream,
                                        source_format="jsonl", encoding=encoding_name,
                                        expected_bytes=path.stat().st_size)
            answer = "ACCEPTED"
        except MarketError as exc:
            answer = f"{exc.status} {exc.errors}"
        elapsed = time.perf_counter() - started
        database.dispose()
    return {"answer": answer, "seconds": elapsed, "rss_before": before,
            "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def pathological(encoding_name: str) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    failed = False
    for label, name in PATHOLOGICAL.items():
        path = CACHE / name
        if not path.exists():
            generate_pathological(path)
        result = subprocess.run([sys.executable, __file__, "--refused-only", str(path),
                                 "--encoding", encoding_name], capture_output=True, text=True,
                                check=True)
        got = json.loads(result.stdout.splitlines()[-1])
        ok = (not got["answer"].startswith("ACCEPTED") and got["seconds"] < 2
              and got["peak"] < 300 * 2**20)
        failed |= not ok
        print(f"{label:18}: {path.stat().st_size / 1e6:7.1f} MB file, refused in "
              f"{got['seconds']:.3f} s (target < 2), peak resident memory "
              f"{got['peak'] / 2**20:.1f} MiB (target < 300; {got['rss_before'] / 2**20:.1f} "
              f"before the import) {'ok' if ok else 'FAILED'}")
        print(f"{'':18}  answer: {got['answer'][:160]}")
    if failed:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--encoding", default="o200k_base")
    parser.add_argument("--pathological", action="store_true",
                        help="files that must be refused within 2 s and 300 MB")
    parser.add_argument("--import-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--refused-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.import_only:
        print(json.dumps(marketplace_import(args.import_only, args.encoding)))
        return
    if args.refused_only:
        print(json.dumps(refused_import(args.refused_only, args.encoding)))
        return
    if args.pathological:
        pathological(args.encoding)
        return

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"import-{args.size_mb}mb.jsonl"
    if not path.exists():
        print(f"generating {path} ...", flush=True)
        generate(path, args.size_mb * 1024 * 1024)
    size_mb = path.stat().st_size / 1e6
    print(f"file: {path.name}, {size_mb:,.0f} MB, encoding {args.encoding}, "
          f"{os.cpu_count()} cores")

    plain_seconds, encode_seconds, plain_tokens = plain_tiktoken(path, args.encoding)
    print(f"plain tiktoken counting : {size_mb / plain_seconds:8.2f} MB/s "
          f"({plain_seconds:.1f} s, {plain_tokens:,} tokens; read + serialize + count)")
    print(f"  of which tiktoken only: {size_mb / encode_seconds:8.2f} MB/s "
          f"({encode_seconds:.1f} s inside encode_ordinary_batch)", flush=True)
    # The import runs in a fresh interpreter, as in a web worker: its memory is its own, not
    # this process's (which has just counted the whole file).
    result = subprocess.run([sys.executable, __file__, "--import-only", str(path),
                             "--encoding", args.encoding], capture_output=True, text=True,
                            check=True)
    import_seconds, import_tokens, own_peak, child_peak = json.loads(
        result.stdout.splitlines()[-1])
    peak = own_peak + child_peak
    print(f"marketplace import      : {size_mb / import_seconds:8.2f} MB/s "
          f"({import_seconds:.1f} s, {import_tokens:,} tokens)")
    print(f"ratio import / plain    : {plain_seconds / import_seconds:8.3f}  (target >= 0.8)")
    print(f"ratio import / tiktoken : {encode_seconds / import_seconds:8.3f}  "
          f"(against the encoding time alone)")
    print(f"peak resident memory    : {peak / 2**20:8.1f} MiB (target < 300): importing "
          f"process {own_peak / 2**20:.1f} + token-counting child {child_peak / 2**20:.1f}")
    if import_tokens != plain_tokens:
        print("ERROR: token totals differ", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
