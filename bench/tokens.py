"""Token counting throughput: raw tiktoken against the marketplace's counting path.

    python bench/tokens.py              # ~10 MB corpus (built once into bench/.cache)
    python bench/tokens.py --size-mb 2  # a quicker run
    python bench/tokens.py --repeat 9   # more timed runs per side (best and median shown)

In one run, on the same deterministic corpus of Chinese, English and mixed
records, for both cl100k_base and o200k_base, it measures:

- raw tiktoken: ``Encoding.encode_ordinary_batch`` on the records already
  serialized canonically, summing the token counts, both with tiktoken's
  default of 8 threads and with one thread per CPU; the faster of the two is
  the baseline;
- the project's path: ``pricing.tokens.count_records`` on the records
  themselves (its default: one thread per CPU, at most 8), so the canonical
  serialization is included in its time;

and prints MB/s (of canonical UTF-8 text), tokens/s and the ratio
project / raw. Both sides are timed the same way (wall clock around one
call, ``--repeat`` runs alternated, best run compared), start from the same
loaded ``Encoding`` and must produce the same token total. Target: ratio >= 0.95.
Run it on an otherwise idle machine: under CPU contention from other
processes, timings of thread pools mostly measure the scheduler.

The corpus is synthesized from a fixed seed (no network) and cached as JSONL
in bench/.cache/ (git-ignored).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pricing.tokens import DEFAULT_THREADS, canonical_json, count_records, get_encoding  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
CORPUS_VERSION = 1
TARGET_RATIO = 0.95

# Common words of industry-data descriptions, so the Chinese text tokenizes
# like real text rather than like random characters.
ZH_WORDS = (
    "数据 市场 行业 模型 训练 标注 质量 客户 平台 服务 企业 管理 系统 分析 技术 产品 价格 订阅 "
    "医疗 金融 制造 零售 物流 能源 交通 农业 教育 法律 保险 电力 汽车 电商 城市 气象 遥感 "
    "图像 语音 文本 视频 对话 问答 翻译 摘要 分类 检测 识别 推荐 搜索 预测 风险 信用 合同 "
    "病历 影像 诊断 药品 患者 医生 银行 证券 基金 交易 账户 用户 订单 商品 库存 仓库 配送 "
    "工厂 设备 传感器 故障 维护 生产 工艺 质检 采购 供应链 销售 营销 广告 渠道 门店 会员 "
    "我们 他们 这个 那些 一个 每天 已经 正在 可以 需要 通过 进行 提供 支持 包括 根据 以及 "
    "其中 目前 同时 因此 但是 如果 所有 部分 主要 重要 不同 相关 实际 基本 具体 整体 "
    "中国 北京 上海 深圳 广州 杭州 成都 武汉 南京 西安 重庆 天津 苏州 "
    "人工智能 大语言模型 机器学习 深度学习 知识图谱 自然语言处理 计算机视觉 数据治理 "
    "隐私保护 脱敏 合规 授权 许可 版权 来源 采集 清洗 去重 抽样 评估 基准 指标 准确率"
).split()
ZH_PUNCT = ["，", "，", "，", "。", "；", "、", "：", "！", "？"]

EN_WORDS = (
    "the of and to in a is that for on with as by at from this be are was it an or which "
    "data market model training label quality customer platform service enterprise system "
    "analysis product price subscription medical finance manufacturing retail logistics energy "
    "transport agriculture education legal insurance power vehicle commerce city weather "
    "image speech text video dialogue question answer translation summary classification "
    "detection recognition recommendation search forecast risk credit contract record patient "
    "doctor bank security fund trade account user order goods inventory warehouse delivery "
    "factory device sensor fault maintenance production process inspection procurement supply "
    "chain sales marketing channel store member annotated curated licensed anonymized compliant "
    "dataset records tokens samples benchmark accuracy precision recall coverage sources "
    "collected cleaned deduplicated sampled evaluated daily monthly quarterly annual regional "
    "national global industry segment category schema field value timestamp identifier"
).split()


def _zh_sentence(rng: random.Random) -> str:
    words = [rng.choice(ZH_WORDS) for _ in range(rng.randint(4, 18))]
    if rng.random() < 0.25:  # English terms and figures inside Chinese text
        words.insert(rng.randrange(len(words)), rng.choice(["API", "GPU", "JSON", "SQL", "LLM", "OCR"]))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"{rng.randint(1, 9999)}{rng.choice(['万', '条', '%', '亿元'])}")
    out = []
    for i, word in enumerate(words):
        out.append(word)
        if i and i < len(words) - 1 and rng.random() < 0.12:
            out.append(rng.choice(ZH_PUNCT[:3]))
    return "".join(out) + rng.choice(ZH_PUNCT[3:])


def _en_sentence(rng: random.Random) -> str:
    words = [rng.choice(EN_WORDS) for _ in range(rng.randint(6, 24))]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), f"{rng.randint(1, 99999):,}")
    sentence = " ".join(words)
    return sentence[0].upper() + sentence[1:] + rng.choice([".", ".", ".", "?", "!", ";"])


def _paragraph(rng: random.Random, lang: str) -> str:
    sentences = []
    for _ in range(rng.randint(1, 12)):
        kind = lang if lang != "mixed" else rng.choice(["zh", "en"])
        sentences.append(_zh_sentence(rng) if kind == "zh" else _en_sentence(rng))
    joiner = "" if lang == "zh" else " "
    return joiner.join(sentences)


def _record(rng: random.Random, n: int) -> dict:
    lang = rng.choices(["zh", "en", "mixed"], weights=[5, 4, 2])[0]
    record = {
        "id": f"rec-{n:08d}",
        "lang": lang,
        "title": _zh_sentence(rng)[:24] if lang == "zh" else _en_sentence(rng)[:60],
        "text": "\n".join(_paragraph(rng, lang) for _ in range(rng.randint(1, 4))),
        "industry": rng.choice(["医疗", "金融", "制造", "retail", "logistics", "energy", "法律"]),
        "tags": [rng.choice(ZH_WORDS + EN_WORDS) for _ in range(rng.randint(0, 5))],
        "label": rng.choice(["positive", "negative", "neutral", "正面", "负面", None]),
        "score": rng.randint(0, 100),
    }
    if rng.random() < 0.2:
        record["meta"] = {"source": rng.choice(["crawl", "partner", "生成", "人工标注"]),
                          "year": rng.randint(2015, 2025), "verified": rng.random() < 0.5}
    return record


def build_corpus(size_mb: float) -> list[dict]:
    """Deterministic records whose canonical JSON totals about ``size_mb`` MB."""
    rng = random.Random(20240601)
    target = int(size_mb * 1_000_000)
    records, total = [], 0
    while total < target:
        record = _record(rng, len(records))
        records.append(record)
        total += len(canonical_json(record).encode("utf-8")) + 1
    return records


def load_corpus(size_mb: float) -> tuple[list[dict], Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"corpus-v{CORPUS_VERSION}-{size_mb:g}mb.jsonl"
    if not path.exists():
        records = build_corpus(size_mb)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            for record in records:
                out.write(canonical_json(record) + "\n")
        os.replace(tmp, path)
    with path.open(encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    return records, path


def _timed(fn) -> tuple[float, int]:
    gc.collect()
    started = time.perf_counter()
    tokens = fn()
    return time.perf_counter() - started, tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    records, path = load_corpus(args.size_mb)
    texts = [canonical_json(r) for r in records]
    megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1_000_000
    digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()[:12]
    cjk_bytes = 3 * sum(1 for t in texts for ch in t if "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    print(f"corpus  {path.relative_to(ROOT)}  {len(records):,} records  {megabytes:.2f} MB canonical UTF-8"
          f"  {cjk_bytes / (megabytes * 1e6):.0%} of bytes Chinese  sha256 {digest}")
    print(f"python  {sys.version.split()[0]}  cpus {cpus}  repeat {args.repeat} (best run compared)")
    print()
    header = f"{'encoding':<12} {'path':<32} {'tokens':>11} {'best s':>7} {'median s':>8} {'MB/s':>7} {'Mtok/s':>7}"
    print(header)
    print("-" * len(header))

    worst = None
    for name in ("cl100k_base", "o200k_base"):
        enc = get_encoding(name)  # loading the vocabulary is not what is measured

        def raw() -> int:
            return sum(map(len, enc.encode_ordinary_batch(texts)))

        def raw_per_cpu() -> int:
            return sum(map(len, enc.encode_ordinary_batch(texts, num_threads=cpus)))

        def project() -> int:
            return sum(count_records(records, name))

        # One untimed round each: first-touch costs (thread start-up, caches).
        raw(), raw_per_cpu(), project()
        times = {"raw": [], "raw_per_cpu": [], "project": []}
        totals = {}
        for _ in range(args.repeat):
            for label, fn in (("raw", raw), ("raw_per_cpu", raw_per_cpu), ("project", project)):
                seconds, tokens = _timed(fn)
                times[label].append(seconds)
                totals[label] = tokens
        if len(set(totals.values())) != 1:
            print(f"MISMATCH {name}: token totals differ: {totals}")
            return 1
        rows = {
            "raw": "tiktoken batch, 8 threads",
            "raw_per_cpu": f"tiktoken batch, {cpus} threads",
            "project": f"count_records+JSON, {DEFAULT_THREADS} thr",
        }
        for label, description in rows.items():
            best = min(times[label])
            print(f"{name:<12} {description:<32} {totals[label]:>11,} {best:>7.3f} "
                  f"{statistics.median(times[label]):>8.3f} {megabytes / best:>7.2f} "
                  f"{totals[label] / best / 1e6:>7.2f}")
        baseline = min(min(times["raw"]), min(times["raw_per_cpu"]))
        median_baseline = min(statistics.median(times["raw"]), statistics.median(times["raw_per_cpu"]))
        ratio = baseline / min(times["project"])
        median_ratio = median_baseline / statistics.median(times["project"])
        verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
        print(f"{name:<12} {'ratio project / best raw':<32} {'':>11} {ratio:>7.3f} {median_ratio:>8.3f}"
              f"   target >= {TARGET_RATIO}: {verdict}")
        print()
        worst = ratio if worst is None else min(worst, ratio)
    return 0 if worst is not None and worst >= TARGET_RATIO else 2


if __name__ == "__main__":
    sys.exit(main())
