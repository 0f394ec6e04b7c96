"""What metering costs a data call, and how fast usage events are ingested, on SQLite and PostgreSQL.

    python bench/metering.py                     # 3,000 records, 2,000 timed calls per side
    python bench/metering.py --requests 500      # a quicker run
    python bench/metering.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

For each database — a fresh SQLite file, and a throwaway PostgreSQL database created on the
server ``--pg-url`` names and dropped at the end (skipped, with a message, if no server answers)
— it builds through the real services (registration, catalogue import, supply chain, offers, an
approved listing, a funded token wallet, API keys) a listed dataset of ``--records`` Chinese and
English records, generated like bench/import.py's, then times, through the Flask test client
(server-side work: routing, key authentication, rate limits, the page query, the body, the
request's commit), GET .../records?limit=20 over the same sequence of pages:

- metering off: the very same view with ``billing.metering.charge.charge_call`` replaced, in this
  process only, by a function that charges nothing and writes nothing (it returns a wallet
  charge of the page's tokens). Everything else — the rate-limit hit and token reservation, the
  page query, the token sum, the idempotency fingerprint, the body and headers — runs as in
  production, so the difference is exactly the charge: the replay lookup, the subscription and
  wallet lookups, the wallet's conditional UPDATE and its entry, the usage event, the flush,
  and the larger commit;
- metering on: the real endpoint, paid from the wallet (a key without a monthly cap);
- metering on, capped: the same with a key that has a monthly token cap (one more conditional
  UPDATE, on the key's month row);
- raw tiktoken: ``encode_ordinary_batch`` over the same pages' 20 canonical records (what
  counting the served bytes live would cost; the endpoint itself sums counts stored at import).

The sides alternate in rounds after a warm-up, so drift hits them alike. It prints requests/s,
median and p99 latency of each, the latency metering adds (median and p99; targets: at most 3 ms
and 10 ms) and the ratios. It then posts usage events to POST /api/v1/usage/events in batches
of 1,000 (royalty events on a credit line; --batches of them, after one warm-up batch): each
batch the events of the next stretch of the last hour, each at its own moment, in no order
within the batch, and encoded before the clock starts. It prints events/s over all of them
(target: at least 10,000 on PostgreSQL), with the median and the slowest batch; "ingestion
endpoint not available" if the route answers 404. ``--clients 2`` has two model companies
report at once (threads of this process, so Python's lock bounds what it can show). It
asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.util
import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from billing import entitlements  # noqa: E402
from billing.metering import charge as metering, postpaid  # noqa: E402
from billing.metering.charge import Charge  # noqa: E402
from market.web.app import create_app  # noqa: E402
from market.core import audit  # noqa: E402
from market.web import schema  # noqa: E402
from market.accounts import services as accounts  # noqa: E402
from market.catalog import importer, listings, offers  # noqa: E402
from market.catalog import services as catalog  # noqa: E402
from market.catalog.models import DatasetRecord  # noqa: E402
from market.core.db import make_engine  # noqa: E402
from pricing.money import Money  # noqa: E402
from pricing.tokens import get_encoding  # noqa: E402

PAGE = 20
TARGET_MEDIAN_MS, TARGET_P99_MS, TARGET_EVENTS_PER_S = 3.0, 10.0, 10_000
PASSWORD = "bench-Metering-2026-horse"
DATASET = {
    "title_zh": "计量基准", "title_en": "Metering bench", "sector": "smart_energy",
    "modality": "text", "ai_stage": "instruction_tuning", "licence": "commercial_standard",
    "personal_information": "none",
    "rights": {"holding": "Bench Co", "usage": "Bench Co", "operation": "Bench Co"}}
METERED = {"kind": "metered", "code": "api", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "30", "currency": "CNY"}}]}
ROYALTY = {"kind": "royalty", "code": "royalty", "mode": "graduated", "tiers": [
    {"from_tokens": 0, "up_to": None, "price_per_million": {"amount": "8", "currency": "CNY"}}]}
# Limits that never refuse a call in the bench: only the charge is measured.
GENEROUS = accounts.KeyLimits(requests_per_minute=10_000_000, tokens_per_minute=2_000_000_000)


def _import_bench_words() -> tuple[list[str], list[str]]:
    """bench/import.py's vocabulary (its module name is a keyword: load it by path)."""
    spec = importlib.util.spec_from_file_location("bench_import", ROOT / "bench" / "import.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ZH, module.EN


def generate_jsonl(count: int) -> bytes:
    """``count`` records of Chinese and English text, as bench/import.py generates them."""
    zh_words, en_words = _import_bench_words()
    rng = random.Random(2026)
    lines = []
    for i in range(count):
        zh = "".join(rng.choice(zh_words) for _ in range(rng.randint(20, 120)))
        en = " ".join(rng.choice(en_words) for _ in range(rng.randint(20, 120)))
        record = {"id": i, "instruction": zh[: len(zh) // 3] + "？", "input": en,
                  "response": zh, "label": rng.choice(["a", "b", "c"])}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


# The databases ----------------------------------------------------------------------------------

@contextlib.contextmanager
def sqlite_database():
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        schema.upgrade(url)
        yield url


@contextlib.contextmanager
def postgresql_database(server_url: str):
    """A throwaway database on the server, dropped afterwards; None if no server answers."""
    probe = make_engine(server_url, connect_args={"connect_timeout": 3})
    try:
        with probe.connect():
            reason = None
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    finally:
        probe.dispose()
    if reason is not None:
        print(f"PostgreSQL: skipped, no server answers at "
              f"{make_url(server_url).render_as_string()} ({reason})")
        yield None
        return
    with schema.throwaway_database(server_url, "bench_metering", connect_timeout=3) as url:
        yield url


def bench_app(url: str):
    return create_app({"DATABASE_URL": url, "SECRET_KEY": "bench", "MARKET_ENV": "development",
                       "PASSWORD_TIME_COST": 1, "PASSWORD_MEMORY_KIB": 8,
                       "API_KEY_MODE": "test", "REDIS_URL": ""})


# The market -------------------------------------------------------------------------------------

def _person(session, passwords, who: str, roles: list[str]):
    user = accounts.register(session, passwords, email=f"{who}@bench.example", password=PASSWORD,
                             name=who.title(), organization_name=f"Bench {who}", roles=roles)
    return accounts.principal_for_user(user)


def build_market(app, jsonl: bytes) -> dict:
    """A listed dataset (metered and royalty prices), a buyer with a funded wallet and a credit
    line, and its API keys: one uncapped, one capped, one for usage reports."""
    database = app.extensions["market.db"]
    passwords = app.extensions["market.passwords"]
    encoding = app.config["TOKEN_ENCODING"]
    with database.session() as session, session.begin():
        owner = _person(session, passwords, "supplier", ["supplier"])
        reviewer = _person(session, passwords, "exchange", ["exchange"])
        buyer = _person(session, passwords, "modelco", ["buyer"])
        dataset = catalog.create_dataset(session, owner, DATASET)
        version = importer.import_version(session, owner, dataset, io.BytesIO(jsonl),
                                          source_format="jsonl", encoding=encoding)
        catalog.set_supply_chain(session, owner, dataset, [
            {"organization_id": owner.organization_id, "role": "supplier", "share_bps": 10_000}])
        for terms in (METERED, ROYALTY):
            offers.add_offer(session, owner, dataset, terms)
        listing = listings.submit(session, owner, dataset, version_id=version.id,
                                  exchange_id=reviewer.organization_id, review_days=5)
        listings.approve(session, reviewer, listing)
        wallet = entitlements.get_wallet(session, buyer.organization_id, "platform")
        entitlements.change_wallet(session, wallet, 10 ** 13, kind="grant", reference="bench")
        postpaid.open_credit_line(session, audit.SYSTEM, buyer.organization_id,
                                  Money.from_minor(10 ** 12, "CNY"))
        _, uncapped = accounts.create_api_key(session, buyer, name="bench", mode="test",
                                              scopes=("data:read",), limits=GENEROUS)
        _, capped = accounts.create_api_key(
            session, buyer, name="bench capped", mode="test", scopes=("data:read",),
            limits=accounts.KeyLimits(GENEROUS.requests_per_minute, GENEROUS.tokens_per_minute,
                                      monthly_token_cap=2_000_000_000))
        # Royalty reporters: this buyer, and a second model company with its own credit
        # line (two companies' batches never wait on each other's rows).
        reporters = []
        for company in (buyer, _person(session, passwords, "modelco2", ["buyer"])):
            if company is not buyer:
                postpaid.open_credit_line(session, audit.SYSTEM, company.organization_id,
                                          Money.from_minor(10 ** 12, "CNY"))
            reporters.append(accounts.create_api_key(session, company, name="bench usage",
                                                     mode="test", scopes=("usage:write",))[1])
        rows = session.execute(select(DatasetRecord.seq, DatasetRecord.data).where(
            DatasetRecord.version_id == version.id).order_by(DatasetRecord.seq)).all()
        return {"dataset_id": dataset.id, "number": version.number, "encoding": encoding,
                "keys": {"uncapped": uncapped, "capped": capped, "reporters": reporters},
                "seqs": [seq for seq, _ in rows], "texts": [data for _, data in rows]}


def page_cursors(market: dict) -> list[tuple[int, list[str]]]:
    """Every whole page of PAGE records: its cursor and its records' canonical JSON."""
    seqs, texts = market["seqs"], market["texts"]
    return [(seqs[start - 1] if start else -1, texts[start:start + PAGE])
            for start in range(0, len(seqs) - PAGE + 1, PAGE)]


# Timing -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def metering_off():
    """charge_call replaced by a charge of nothing that writes nothing (see the module notes)."""
    real = metering.charge_call

    def free_charge(session, *, key, tokens, **_call) -> Charge:
        return Charge(tokens, Money.zero(key.organization.default_currency), "wallet", 0, 0)

    metering.charge_call = free_charge
    try:
        yield
    finally:
        metering.charge_call = real


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, -(-int(fraction * 1000) * len(sorted_values) // 1000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class Side:
    def __init__(self, label: str) -> None:
        self.label = label
        self.latencies: list[float] = []
        self.tokens = 0

    def row(self) -> dict:
        values = sorted(self.latencies)
        return {"label": self.label, "n": len(values),
                "rps": len(values) / sum(values),
                "median": statistics.median(values) * 1000,
                "p99": _percentile(values, 0.99) * 1000}


def time_calls(client, market: dict, secret: str, pages, side: Side | None) -> None:
    path = f"/api/v1/datasets/{market['dataset_id']}/versions/{market['number']}/records"
    headers = {"Authorization": f"Bearer {secret}"}
    for cursor, _ in pages:
        started = time.perf_counter()
        response = client.get(path, headers=headers,
                              query_string={"limit": PAGE, "cursor": cursor})
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"unexpected {response.status_code}: {response.get_data(True)}")
        if side is not None:
            side.latencies.append(elapsed)
            side.tokens += int(response.headers["X-Tokens-Charged"])


def time_tiktoken(encoding, pages, side: Side | None) -> None:
    for _, texts in pages:
        started = time.perf_counter()
        tokens = sum(map(len, encoding.encode_ordinary_batch(texts)))
        elapsed = time.perf_counter() - started
        if side is not None:
            side.latencies.append(elapsed)
            side.tokens += tokens


def _sequence(pages, count: int, offset: int = 0):
    return [pages[(offset + i) % len(pages)] for i in range(count)]


def measure_calls(app, market: dict, requests: int, warmup: int, rounds: int) -> list[dict]:
    pages = page_cursors(market)
    encoding = get_encoding(market["encoding"])
    client = app.test_client()
    keys = market["keys"]
    sides = {name: Side(label) for name, label in (
        ("off", "metering off"), ("on", "metering on (wallet)"),
        ("capped", "metering on (wallet + cap)"), ("tiktoken", "raw tiktoken, same pages"))}

    def run(name: str, sequence, side: Side | None) -> None:
        if name == "off":
            with metering_off():
                time_calls(client, market, keys["uncapped"], sequence, side)
        elif name == "tiktoken":
            time_tiktoken(encoding, sequence, side)
        else:
            time_calls(client, market, keys["uncapped" if name == "on" else "capped"],
                       sequence, side)

    for name in sides:
        run(name, _sequence(pages, warmup), None)
    per_round = max(1, requests // rounds)
    for i in range(rounds):
        sequence = _sequence(pages, per_round, offset=i * per_round)
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            run(name, sequence, sides[name])
    rows = [side.row() for side in sides.values()]
    match = {sides["on"].tokens, sides["capped"].tokens, sides["tiktoken"].tokens}
    rows.append({"tokens_agree": len(match) == 1, "tokens": sides["on"].tokens,
                 "tiktoken_tokens": sides["tiktoken"].tokens})
    return rows


def measure_ingestion(app, market: dict, batches: int, batch_size: int,
                      clients: int = 1) -> dict | str:
    """``batches`` batches posted by ``clients`` clients at once, after one warm-up batch
    each; events/s over the wall-clock time of all of them. Each client is a thread with its
    own test client and database session, as a threaded server's workers would be, and
    reports for its own model company: one company's batches are rated one after another
    (they lock its month's usage counter and its credit line), so only different companies'
    batches can run side by side."""
    reporters = market["keys"]["reporters"]
    rng = random.Random(7)
    now = dt.datetime.now(dt.timezone.utc)
    run = uuid.uuid4().hex[:8]

    count = batches + clients
    window = 3_600_000_000 // count  # microseconds of the last hour each batch reports

    def batch(n: int) -> bytes:
        # A model company reporting its last hour as it goes: each batch the events of the
        # next stretch of time, each its own moment in it, in no particular order (logs of
        # several model servers, merged).
        since = now - dt.timedelta(microseconds=(count - n) * window)
        return json.dumps({"events": [
            {"id": f"bench-{run}-{n}-{i}", "dataset_id": market["dataset_id"],
             "tokens": rng.randint(1, 5_000),
             "occurred_at": (since + dt.timedelta(microseconds=rng.randrange(window))
                             ).isoformat()}
            for i in range(batch_size)]}).encode()

    # Encoded before the clock starts: the client's own JSON encoding is not the server's work.
    bodies = [batch(n) for n in range(count)]

    def post(client, secret: str, body: bytes) -> tuple[float, str | None]:
        started = time.perf_counter()
        response = client.post("/api/v1/usage/events", data=body,
                               headers={"Authorization": f"Bearer {secret}"},
                               content_type="application/json")
        took = time.perf_counter() - started
        if response.status_code in (404, 405):
            return took, "ingestion endpoint not available"
        result = response.get_json(silent=True) or {}
        if response.status_code != 200 or result.get("accepted") != batch_size:
            first_error = next((r.get("error") for r in result.get("results", [])
                                if r.get("status") != "accepted"), None)
            return took, (f"ingestion failed: {response.status_code} "
                          f"{ {k: result.get(k) for k in ('accepted', 'rejected', 'detail')} } "
                          f"{first_error or ''}")
        return took, None

    if clients > len(reporters):
        raise SystemExit(f"at most {len(reporters)} clients: one a model company")
    test_clients = [(app.test_client(), reporters[k]) for k in range(clients)]
    for (client, secret), body in zip(test_clients, bodies):  # warm-up, one batch each
        _, error = post(client, secret, body)
        if error:
            return error
    shares = [bodies[clients + k::clients] for k in range(clients)]
    took_each: list[float] = []
    errors: list[str] = []

    def work(client_and_secret, share: list[bytes]) -> None:
        for body in share:
            took, error = post(*client_and_secret, body)
            if error:
                errors.append(error)
                return
            took_each.append(took * 1000)

    threads = [threading.Thread(target=work, args=pair) for pair in zip(test_clients, shares)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        return errors[0]
    accepted = batch_size * len(took_each)
    return {"clients": clients, "events": accepted, "seconds": elapsed,
            "rate": accepted / elapsed, "batch_ms": statistics.mean(took_each),
            "median_ms": statistics.median(took_each), "slowest_ms": max(took_each)}


# Printing ---------------------------------------------------------------------------------------

def print_calls(name: str, rows: list[dict]) -> None:
    by_label = {row["label"]: row for row in rows if "label" in row}
    print(f"{name}: GET records limit={PAGE}")
    header = f"  {'side':<30} {'calls':>6} {'req/s':>9} {'median ms':>10} {'p99 ms':>9}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for row in by_label.values():
        print(f"  {row['label']:<30} {row['n']:>6} {row['rps']:>9,.0f} {row['median']:>10.3f} "
              f"{row['p99']:>9.3f}")
    off = by_label["metering off"]
    for label, short in (("metering on (wallet)", "wallet"),
                         ("metering on (wallet + cap)", "wallet + cap")):
        on = by_label[label]
        added_median, added_p99 = on["median"] - off["median"], on["p99"] - off["p99"]
        verdict = "ok" if added_median <= TARGET_MEDIAN_MS and added_p99 <= TARGET_P99_MS \
            else "ABOVE TARGET"
        print(f"  added, {short:<12}: median {added_median:+.3f} ms, "
              f"p99 {added_p99:+.3f} ms (targets <= {TARGET_MEDIAN_MS:g} / {TARGET_P99_MS:g} ms: "
              f"{verdict}); req/s on/off {on['rps'] / off['rps']:.3f}, median on/off "
              f"{on['median'] / off['median']:.2f}")
    raw = by_label["raw tiktoken, same pages"]
    on = by_label["metering on (wallet)"]
    print(f"  raw tiktoken per page: median {raw['median']:.3f} ms; metering's added median is "
          f"{(on['median'] - off['median']) / raw['median']:.2f}x counting the page live")
    check = rows[-1]
    print(f"  tokens charged {check['tokens']:,} vs tiktoken {check['tiktoken_tokens']:,}: "
          f"{'agree' if check['tokens_agree'] else 'DIFFER'}")


def print_ingestion(name: str, result: dict | str) -> None:
    if isinstance(result, str):
        print(f"{name}: usage events: {result}")
        return
    target = f"target >= {TARGET_EVENTS_PER_S:,}: " + (
        "ok" if result["rate"] >= TARGET_EVENTS_PER_S else "BELOW TARGET")
    clients = result["clients"]
    print(f"{name}: usage events, {clients} client{'s' if clients > 1 else ''}: "
          f"{result['events']:,} in {result['seconds']:.2f} s = {result['rate']:,.0f} events/s "
          f"(a batch of 1,000 takes {result['batch_ms']:.1f} ms on average, median "
          f"{result['median_ms']:.1f}, slowest {result['slowest_ms']:.1f}; "
          f"{target if name == 'PostgreSQL' else 'target is for PostgreSQL'})")


def run_backend(name: str, url: str, jsonl: bytes, args) -> None:
    app = bench_app(url)
    try:
        started = time.perf_counter()
        market = build_market(app, jsonl)
        print(f"{name}: built {len(market['seqs']):,} records through the services in "
              f"{time.perf_counter() - started:.1f} s")
        if args.only != "ingestion":
            print_calls(name, measure_calls(app, market, args.requests, args.warmup,
                                            args.rounds))
        if args.only != "calls":
            print_ingestion(name, measure_ingestion(app, market, args.batches, 1_000,
                                                    args.clients))
        print()
    finally:
        app.extensions["market.db"].dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=2_000, help="timed calls per side")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10, help="alternations of the sides")
    parser.add_argument("--batches", type=int, default=50, help="timed batches of 1,000 events")
    parser.add_argument("--clients", type=int, choices=(1, 2), default=1,
                        help="model companies reporting at once (threads of this process)")
    parser.add_argument("--only", choices=("calls", "ingestion"),
                        help="run one of the two measurements")
    parser.add_argument("--database", choices=("sqlite", "postgresql"),
                        help="run on one of the two databases")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server to create the throwaway database on")
    args = parser.parse_args(argv)

    jsonl = generate_jsonl(args.records)
    print(f"python {sys.version.split()[0]}; {args.records:,} records "
          f"({len(jsonl) / 1e6:.1f} MB JSONL); {args.requests:,} timed calls a side after "
          f"{args.warmup} warm-up, in {args.rounds} alternating rounds; Flask test client")
    print()
    if args.database != "postgresql":
        with sqlite_database() as url:
            run_backend("SQLite", url, jsonl, args)
    if args.database != "sqlite":
        with postgresql_database(args.pg_url) as url:
            if url is not None:
                run_backend("PostgreSQL", url, jsonl, args)


if __name__ == "__main__":
    main()
