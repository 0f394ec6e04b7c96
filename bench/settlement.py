"""Closing a month's settlement statements over a million usage events and 100,000 orders.

    python bench/settlement.py                 # 100k events + 10k orders, then 1M + 100k
    python bench/settlement.py --quick         # 10k + 1k, then 100k + 10k
    python bench/settlement.py --profile       # also cProfile the smaller size's close
    python bench/settlement.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

For each size, in its own throwaway PostgreSQL database (created on the ``--pg-url`` server
through the real schema, ``market.web.schema.upgrade``, and dropped at the end), it builds a market
of 1,000 participant organizations (500 suppliers, 300 processors, 200 channels), 3 exchanges
and 500 buyers, 2,000 listed datasets each with a supply chain of 2 to 4 participants, then
last month's activity:

- orders (85% of one line, 15% of two, 90% CNY and 10% USD), each paid by card during the
  month. Orders, lines and payments are written with COPY (psycopg ``cursor.copy``); so are
  their ledger postings: going through ``billing.settlement.split.post_payment`` would cost ~8 round trips
  per order (account look-ups, the idempotency check, a flush), minutes for 100,000 orders.
  Each order's split is computed by the real ``billing.payments.settle.order_split`` (hence
  ``billing.settlement.split.split_payment``), its accounts are created by the real
  ``billing.settlement.split.part_account``, and its transaction is what ``post_payment`` would write:
  kind ``payment``, idempotency key ``payment:<id>``, reference ``("payment", id)``, the memo's
  split, the fingerprint of ``billing.settlement.ledger._fingerprint`` and the seal of
  ``billing.settlement.ledger.seal_of_lines``, one debit of platform_clearing
  and one credit per part; the ledger is then checked to balance per currency
  (``billing.settlement.ledger.trial_balance``) with no unbalanced transaction
  (``billing.settlement.ledger.unbalanced_transactions``);
- postpaid usage events (data calls, and 10% royalty reports), also by COPY, spread over the
  month's days. The buyer/dataset pairs in use grow with the size (about 20 events per pair and
  day) so that the ledger grows with the data rather than saturating;
- the usage is posted to the ledger through the production path, ``billing.metering.recognition.
  recognize_range`` (``recognize_day`` for each day of the month, one transaction a day, as the
  catch-up job does), timed on its own.

Then, after ``VACUUM ANALYZE`` (as autovacuum would have done by month end), it closes the month:
``billing.settlement.workflow.close_period(session, period, actor=None, settings=...,
cutoff=...)`` in one transaction, committed, timed with the number of SQL statements it ran. It prints for each size
the generation, recognition and close times and the statements and lines written, then the
ratio of the close times against the ratio of the data (events, orders, and the ledger lines
the close reads). Targets: a close of at most 60 s at 1M events, and growth no worse than
linear (close ratio <= data ratio). It asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import pstats
import random
import resource
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import event, func, insert, select  # noqa: E402

from billing.metering import recognition  # noqa: E402
from billing.settlement import ledger, workflow  # noqa: E402
from billing.context import BillingSettings  # noqa: E402
from billing.settlement.ledger import LedgerAccount, LedgerEntry, LedgerTransaction, Line, Purpose  # noqa: E402
from billing.models.statements import SettlementStatement, StatementLine  # noqa: E402
from billing.payments.settle import order_split  # noqa: E402
from billing.settlement.split import PLATFORM, participant_key, part_account  # noqa: E402
from market.web import schema  # noqa: E402
from market.accounts.models import Organization, OrganizationRole  # noqa: E402
from market.catalog.models import (  # noqa: E402
    Dataset, DatasetVersion, Listing, SupplyChainRevision, SupplyChainShare,
)
from market.core.db import Database, make_engine, utcnow  # noqa: E402
from pricing.money import Money  # noqa: E402

SIZES = ((100_000, 10_000), (1_000_000, 100_000))  # (usage events, orders)
QUICK_SIZES = ((10_000, 1_000), (100_000, 10_000))
SUPPLIERS, PROCESSORS, CHANNELS = 500, 300, 200  # the 1,000 participants
EXCHANGES, BUYERS, DATASETS = 3, 500, 2_000
EVENTS_PER_PAIR_DAY = 20
FEE_BPS = 500
PRICE_PER_MILLION_MINOR = 3_000  # 30.00 CNY per million tokens
TARGET_CLOSE_S = 60.0
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def previous_month(now: dt.datetime) -> tuple[str, dt.date, dt.date]:
    end = now.date().replace(day=1)
    start = (end - dt.timedelta(days=1)).replace(day=1)
    return f"{start:%Y-%m}", start, end


def copy_rows(conn, table: str, columns: tuple[str, ...], rows) -> int:
    """COPY rows into a table on the connection's own transaction; how many."""
    count = 0
    with conn.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
    return count


def reset_sequences(conn, *tables: str) -> None:
    for table in tables:
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")


# The market -------------------------------------------------------------------------------------

def build_market(engine, rng: random.Random, month_start: dt.date) -> dict:
    """Organizations, datasets with versions, supply chains and listings (SQLAlchemy Core)."""
    created = dt.datetime.combine(month_start, dt.time(), tzinfo=dt.timezone.utc) \
        - dt.timedelta(days=90)
    groups = (("supplier", SUPPLIERS), ("processor", PROCESSORS), ("channel", CHANNELS),
              ("exchange", EXCHANGES), ("buyer", BUYERS))
    with engine.begin() as conn:
        orgs: dict[str, list[int]] = {}
        for role, count in groups:
            ids = conn.execute(insert(Organization).returning(Organization.id), [
                {"slug": f"{role}-{n}", "name": f"{role.title()} {n}",
                 "default_currency": "CNY", "created_at": created} for n in range(count)]
            ).scalars().all()
            conn.execute(insert(OrganizationRole), [
                {"organization_id": org, "role": role} for org in ids])
            orgs[role] = list(ids)
        datasets = conn.execute(insert(Dataset).returning(Dataset.id), [
            {"organization_id": orgs["supplier"][n % SUPPLIERS], "title_zh": f"数据集 {n}",
             "title_en": f"Dataset {n}", "sector": "smart_energy", "modality": "text",
             "ai_stage": "pretraining", "licence": "commercial_standard",
             "personal_information": "none", "created_at": created, "updated_at": created}
            for n in range(DATASETS)]).scalars().all()
        versions = conn.execute(insert(DatasetVersion).returning(DatasetVersion.id), [
            {"dataset_id": dataset_id, "number": 1, "source_format": "jsonl",
             "source_bytes": 1_000_000, "record_count": 1_000, "canonical_bytes": 1_000_000,
             "token_count": 250_000, "encoding": "o200k_base", "content_sha256": "0" * 64,
             "schema": {}, "samples": [], "quality": {}, "quality_score": 90,
             "quality_grade": "A", "created_at": created, "locked_at": created}
            for dataset_id in datasets]).scalars().all()
        conn.execute(insert(Listing), [
            {"dataset_id": dataset_id, "version_id": version_id,
             "exchange_id": orgs["exchange"][n % EXCHANGES], "status": "approved",
             "submitted_at": created, "decided_at": created, "listed_at": created}
            for n, (dataset_id, version_id) in enumerate(zip(datasets, versions))])
        revisions = conn.execute(insert(SupplyChainRevision).returning(SupplyChainRevision.id), [
            {"dataset_id": dataset_id, "revision": 1, "note": "", "created_at": created}
            for dataset_id in datasets]).scalars().all()
        # Processors and channels in turn, so every one of them is in some chain.
        others = [("processor", org) for org in orgs["processor"]] + \
                 [("channel", org) for org in orgs["channel"]]
        rng.shuffle(others)
        slot = 0
        share_rows, chains = [], []
        for n, revision_id in enumerate(revisions):
            size = rng.choice((2, 3, 3, 4))
            members = [("supplier", orgs["supplier"][n % SUPPLIERS])]
            for _ in range(size - 1):
                members.append(others[slot % len(others)])
                slot += 1
            first = rng.randrange(4_000, 8_001)
            cuts = sorted(rng.sample(range(1, 10_000 - first), size - 2)) if size > 2 else []
            bounds = [0, *cuts, 10_000 - first]
            bps = [first] + [bounds[i + 1] - bounds[i] for i in range(size - 1)]
            shares = []
            for position, ((role, org), share) in enumerate(zip(members, bps), start=1):
                share_rows.append({"revision_id": revision_id, "position": position,
                                   "organization_id": org, "role": role, "share_bps": share})
                shares.append([participant_key(role, org), share])
            chains.append(shares)
        conn.execute(insert(SupplyChainShare), share_rows)
    return {"orgs": orgs, "datasets": list(zip(datasets, versions, revisions, chains)),
            "shares": len(share_rows)}


class Accounts:
    """Ledger account ids by split key and currency, created by the real ``part_account``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.ids: dict[tuple[str, str], SimpleNamespace] = {}

    def get(self, key: str, currency: str) -> SimpleNamespace:
        found = self.ids.get((key, currency))
        if found is None:
            with self.db.session() as session, session.begin():
                if key == "clearing":
                    account = ledger.get_account(session, Purpose.PLATFORM_CLEARING, currency)
                else:
                    account = part_account(session, key, currency)
                found = SimpleNamespace(id=account.id, currency=account.currency,
                                        purpose=account.purpose,
                                        organization_id=account.organization_id)
            self.ids[(key, currency)] = found
        return found


def build_orders(engine, db: Database, rng: random.Random, market: dict, count: int,
                 month_start: dt.date, days: int) -> dict:
    """Paid card orders, their lines and payments, and each payment's ledger posting."""
    accounts = Accounts(db)
    for currency in ("CNY", "USD"):  # platform and every participant's accounts, created first
        for key in ("clearing", "tax", PLATFORM):
            accounts.get(key, currency)
    buyers = market["orgs"]["buyer"]
    datasets = market["datasets"]
    origin = dt.datetime.combine(month_start, dt.time(), tzinfo=dt.timezone.utc)
    orders, lines, payments, transactions, entries = [], [], [], [], []
    line_id = entry_id = 0
    for n in range(1, count + 1):
        currency = "USD" if rng.random() < 0.1 else "CNY"
        created_at = origin + dt.timedelta(seconds=rng.randrange(days * 86_400 - 3_600))
        paid_at = created_at + dt.timedelta(seconds=rng.randrange(60, 3_600))
        order_lines = []
        for position in range(1, (2 if rng.random() < 0.15 else 1) + 1):
            dataset_id, version_id, revision_id, shares = datasets[rng.randrange(DATASETS)]
            subtotal = rng.randrange(10_000, 5_000_000)
            tax = (subtotal * 6 + 50) // 100
            line_id += 1
            order_lines.append(SimpleNamespace(
                id=line_id, position=position, kind="mall_package", dataset_id=dataset_id,
                version_id=version_id, revision_id=revision_id, shares=shares,
                subtotal_minor=subtotal, tax_minor=tax, total_minor=subtotal + tax))
        subtotal = sum(line.subtotal_minor for line in order_lines)
        tax = sum(line.tax_minor for line in order_lines)
        order = SimpleNamespace(id=n, number=f"DM-BENCH-{n:09d}", kind="mall",
                                organization_id=buyers[rng.randrange(BUYERS)],
                                currency=currency, lines=order_lines,
                                total=Money.from_minor(subtotal + tax, currency))
        split = order_split(order, FEE_BPS)  # the real split, exact to the minor unit
        orders.append((n, order.number, order.organization_id, "mall", "paid", currency,
                       subtotal, tax, subtotal + tax, subtotal + tax, 0, "card", "",
                       created_at, created_at, paid_at))
        for line in order_lines:
            lines.append((line.id, n, line.position, line.kind, f"Package of dataset "
                          f"{line.dataset_id}", line.dataset_id, line.version_id, 1, 0,
                          line.subtotal_minor, line.tax_minor, line.total_minor, "0.06", "{}",
                          line.revision_id, json.dumps(line.shares)))
        memo_split = {key: str(part.amount) for key, part in split.items()}
        payments.append((n, n, order.organization_id, "card", "succeeded", subtotal + tax,
                         currency, f"pi_bench_{n}", f"pay:bench:{n}", False, True,
                         json.dumps(memo_split), 0, created_at, paid_at, paid_at))
        # What post_payment(session, split, idempotency_key=f"payment:{id}",
        # reference=("payment", id)) writes.
        posting = [Line.debit(accounts.get("clearing", currency), order.total)]
        posting += [Line.credit(accounts.get(key, currency), part)
                    for key, part in split.items()]
        posting = [line for line in posting if not line.amount.is_zero()]
        memo = {"split": memo_split}
        seal = ledger.seal_of_lines("payment", posting, idempotency_key=f"payment:{n}",
                                    reference=("payment", n), memo=memo, occurred_at=paid_at)
        transactions.append((n, "payment", f"payment:{n}", ledger._fingerprint("payment", posting),
                             "payment", str(n), json.dumps(memo), paid_at, seal))
        for line in posting:
            entry_id += 1
            entries.append((entry_id, n, line.account.id, line.amount.minor, currency))
    with engine.begin() as conn:
        copy_rows(conn, "orders", (
            "id", "number", "organization_id", "kind", "status", "currency", "subtotal_minor",
            "tax_minor", "total_minor", "paid_minor", "refunded_minor", "payment_method",
            "note", "created_at", "payable_at", "paid_at"), orders)
        copy_rows(conn, "order_lines", (
            "id", "order_id", "position", "kind", "description", "dataset_id", "version_id",
            "quantity", "tokens", "subtotal_minor", "tax_minor", "total_minor", "tax_rate",
            "terms", "supply_chain_revision_id", "shares"), lines)
        copy_rows(conn, "payments", (
            "id", "order_id", "organization_id", "method", "status", "amount_minor",
            "currency", "gateway_ref", "idempotency_key", "off_session", "applied", "split",
            "refunded_minor", "created_at", "updated_at", "succeeded_at"), payments)
        copy_rows(conn, "ledger_transactions", (
            "id", "kind", "idempotency_key", "fingerprint", "reference_type", "reference_id",
            "memo", "occurred_at", "seal"), transactions)
        copy_rows(conn, "ledger_entries", (
            "id", "transaction_id", "account_id", "amount_minor", "currency"), entries)
        reset_sequences(conn, "orders", "order_lines", "payments", "ledger_transactions",
                        "ledger_entries")
    return {"orders": len(orders), "lines": len(lines), "entries": len(entries)}


def build_usage(engine, rng: random.Random, market: dict, count: int, period: str,
                month_start: dt.date, days: int) -> dict:
    """Postpaid usage events over the month's days, by COPY."""
    buyers = market["orgs"]["buyer"]
    datasets = market["datasets"]
    pair_count = max(1, count // (days * EVENTS_PER_PAIR_DAY))
    pairs = []
    for _ in range(pair_count):
        dataset_id, version_id, revision_id, _ = datasets[rng.randrange(DATASETS)]
        pairs.append((buyers[rng.randrange(BUYERS)], dataset_id, version_id, revision_id,
                      "royalty" if rng.random() < 0.1 else "data"))
    origin = dt.datetime.combine(month_start, dt.time(), tzinfo=dt.timezone.utc)
    span = days * 86_400

    def rows():
        for n in range(count):
            org, dataset_id, version_id, revision_id, kind = pairs[rng.randrange(pair_count)]
            recorded = origin + dt.timedelta(seconds=rng.randrange(span))
            tokens = rng.randrange(100, 20_000)
            amount = max(1, (tokens * PRICE_PER_MILLION_MINOR + 500_000) // 1_000_000)
            yield (f"bench-{n}", org, dataset_id, version_id, kind, tokens, "30", amount, "CNY",
                   "postpaid", revision_id, period, recorded - dt.timedelta(seconds=2),
                   recorded)

    with engine.begin() as conn:
        written = copy_rows(conn, "usage_events", (
            "request_id", "organization_id", "dataset_id", "version_id", "kind", "tokens",
            "unit_price", "amount_minor", "currency", "paid_by", "supply_chain_revision_id",
            "period", "occurred_at", "recorded_at"), rows())
    return {"events": written, "pairs": pair_count}


# One size ---------------------------------------------------------------------------------------

class QueryCounter:
    def __init__(self, engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args) -> None:
        self.count += 1


def ledger_figures(db: Database) -> dict:
    with db.session() as session:
        payable = session.scalar(
            select(func.count()).select_from(LedgerEntry).join(LedgerAccount)
            .where(LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value))
        return {"transactions": session.scalar(select(func.count()).select_from(LedgerTransaction)),
                "entries": session.scalar(select(func.count()).select_from(LedgerEntry)),
                "payable_entries": payable,
                "trial_balance": ledger.trial_balance(session),
                "unbalanced": len(ledger.unbalanced_transactions(session))}


def run_size(url: str, events: int, orders: int, period: str, month_start: dt.date,
             month_end: dt.date, profile: bool) -> dict:
    rng = random.Random(20261123 + events)
    days = (month_end - month_start).days
    db = Database(url)
    engine = db.engine
    label = f"{events:,} events + {orders:,} orders"
    try:
        started = time.perf_counter()
        market = build_market(engine, rng, month_start)
        made = build_orders(engine, db, rng, market, orders, month_start, days)
        usage = build_usage(engine, rng, market, events, period, month_start, days)
        generation = time.perf_counter() - started
        print(f"[{label}] generated in {generation:.1f} s: "
              f"{sum(len(v) for v in market['orgs'].values()):,} organizations "
              f"({SUPPLIERS + PROCESSORS + CHANNELS:,} participants), {DATASETS:,} datasets, "
              f"{market['shares']:,} chain shares; {made['orders']:,} orders "
              f"({made['lines']:,} lines, {made['entries']:,} ledger entries); "
              f"{usage['events']:,} usage events over {days} days "
              f"({usage['pairs']:,} buyer/dataset pairs)", flush=True)

        settings = BillingSettings(platform_fee_bps=FEE_BPS)
        started = time.perf_counter()
        groups = recognition.recognize_range(db, month_start, month_end - dt.timedelta(days=1),
                                             settings)
        recognized = time.perf_counter() - started
        print(f"[{label}] recognition (recognize_day x {days} days): {recognized:.1f} s, "
              f"{groups:,} usage groups posted ({groups / recognized:,.0f}/s)", flush=True)

        started = time.perf_counter()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        figures = ledger_figures(db)
        balanced = all(total == 0 for total in figures["trial_balance"].values()) and \
            not figures["unbalanced"]
        print(f"[{label}] ledger: {figures['transactions']:,} transactions, "
              f"{figures['entries']:,} entries ({figures['payable_entries']:,} participant_payable); "
              f"trial balance {figures['trial_balance']} "
              f"{'balanced' if balanced else 'NOT BALANCED'}, "
              f"{figures['unbalanced']} unbalanced transactions "
              f"(VACUUM ANALYZE + checks {time.perf_counter() - started:.1f} s)", flush=True)

        time.sleep(0.01)
        cutoff = utcnow()
        time.sleep(0.01)
        counter = QueryCounter(engine)
        profiler = cProfile.Profile() if profile else None
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        with db.session() as session:
            with session.begin():
                written = workflow.close_period(session, period, actor=None,
                                                settings=BillingSettings(), cutoff=cutoff)
                statement_count = len(written)
        if profiler:
            profiler.disable()
        closed = time.perf_counter() - started
        queries = counter.count
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with db.session() as session:
            stored = session.scalar(select(func.count()).select_from(SettlementStatement))
            line_count = session.scalar(select(func.count()).select_from(StatementLine))
            closing = session.scalar(select(func.coalesce(
                func.sum(SettlementStatement.closing_minor), 0)))
            owed = -session.scalar(
                select(func.coalesce(func.sum(LedgerEntry.amount_minor), 0)).join(LedgerAccount)
                .where(LedgerAccount.purpose == Purpose.PARTICIPANT_PAYABLE.value))
        agrees = stored == statement_count and line_count == figures["payable_entries"]
        print(f"[{label}] close_period: {closed:.1f} s, {statement_count:,} statements, "
              f"{line_count:,} lines, {queries:,} SQL statements; closings sum {closing:,} "
              f"vs payable balance {owed:,} (all currencies, minor units): "
              f"{'agree' if agrees and closing == owed else 'DIFFER'}; peak RSS "
              f"{rss_before / 1024:,.0f} -> {rss_after / 1024:,.0f} MiB", flush=True)
        if profiler:
            print_profile(profiler, label)
        print(flush=True)
        return {"events": events, "orders": orders, "generation": generation,
                "recognition": recognized, "groups": groups, "close": closed,
                "statements": statement_count, "lines": line_count, "queries": queries,
                "payable_entries": figures["payable_entries"]}
    finally:
        db.dispose()


def print_profile(profiler: cProfile.Profile, label: str) -> None:
    for order, limit in (("cumulative", 35), ("tottime", 20)):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(order).print_stats(limit)
        body = out.getvalue()
        start = body.find("   ncalls")
        print(f"[{label}] cProfile of close_period, by {order}:")
        print(body[start:].rstrip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=SERVER,
                        help="a server URL; a throwaway database is created on it and dropped")
    parser.add_argument("--quick", action="store_true",
                        help="10k events + 1k orders, then 100k + 10k")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the close of the smaller size")
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else SIZES
    period, month_start, month_end = previous_month(utcnow())
    with make_engine(args.pg_url).connect() as conn:
        version = conn.exec_driver_sql("SHOW server_version").scalar()
    print(f"python {sys.version.split()[0]}, PostgreSQL {version}; closing {period} "
          f"({month_start} to {month_end}, exclusive); sizes: "
          + ", ".join(f"{e:,} events + {o:,} orders" for e, o in sizes))
    print()
    results = []
    for n, (events, orders) in enumerate(sizes):
        with schema.throwaway_database(args.pg_url, "bench_settlement", connect_timeout=3) as url:
            results.append(run_size(url, events, orders, period, month_start, month_end,
                                    profile=args.profile and n == 0))
    small, large = results
    print("summary")
    print(f"  {'size':<30} {'generate s':>10} {'recognize s':>11} {'close s':>8} "
          f"{'statements':>10} {'lines':>9} {'SQL':>9}")
    for row in results:
        print(f"  {row['events']:>9,} events + {row['orders']:>7,} orders "
              f"{row['generation']:>10.1f} {row['recognition']:>11.1f} {row['close']:>8.1f} "
              f"{row['statements']:>10,} {row['lines']:>9,} {row['queries']:>9,}")
    close_ratio = large["close"] / small["close"]
    data_ratio = large["events"] / small["events"]
    lines_ratio = large["lines"] / small["lines"]
    print(f"  close ratio large/small: {close_ratio:.2f}; data ratio: events "
          f"{data_ratio:.1f}x, orders {large['orders'] / small['orders']:.1f}x, ledger lines "
          f"closed {lines_ratio:.2f}x; recognition ratio "
          f"{large['recognition'] / small['recognition']:.2f} for {large['groups'] / small['groups']:.2f}x groups")
    linear = "ok" if close_ratio <= lines_ratio else "WORSE THAN LINEAR"
    target = "ok" if large["close"] <= TARGET_CLOSE_S else "ABOVE TARGET"
    print(f"  growth: close ratio {close_ratio:.2f} vs lines ratio {lines_ratio:.2f}: {linear}; "
          f"close at {large['events']:,} events {large['close']:.1f} s "
          f"(target <= {TARGET_CLOSE_S:g} s{' at 1M' if not args.quick else ', meant for 1M'}): "
          f"{target}")


if __name__ == "__main__":
    main()
