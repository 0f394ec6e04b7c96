"""Scheduled jobs: the one list, exactly-once runs across processes, the CLI and the scheduler.

The exactly-once tests run on a fresh database whose transactions really commit (the usual
per-test rollback binds every session to one connection, so nothing could race).
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select

from billing import runs
from billing.jobs import JOBS, JOBS_BY_NAME
from billing.models.operations import JobRun
from billing.runs import DAILY, MONTHLY, Job, JobContext
from market.web.cli import billing as billing_cli
from market.web.cli.billing import SCHEDULED_JOBS, build_scheduler, scheduled_run
from pricing.periods import day_before, month_before
from tests.concurrency import fresh_app

NOW = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.timezone.utc)


class Recorder:
    """A job body that counts its calls, can be told to fail, and can be slowed down."""

    def __init__(self, *, fail_times: int = 0, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.fail_times = fail_times
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, ctx: JobContext) -> dict:
        with self._lock:
            self.calls.append(ctx.period)
            failing = len(self.calls) <= self.fail_times
        time.sleep(self.delay)
        if failing:
            raise RuntimeError("gateway unreachable")
        ctx.progress(f"handled {ctx.period}")
        return {"handled": ctx.period}


TEST_JOB = Job(name="test-job", description="A job of the tests.", run=lambda ctx: {},
               trigger={"hour": 2, "minute": 0}, period_of=month_before,
               period_pattern=MONTHLY)


@pytest.fixture()
def register_job(monkeypatch):
    """Schedule ``TEST_JOB`` with ``recorder`` as its body, beside the real jobs."""

    def register(recorder: Recorder) -> Recorder:
        monkeypatch.setattr(billing_cli, "SCHEDULED_JOBS",
                            (*SCHEDULED_JOBS, Job(**{**TEST_JOB.__dict__, "run": recorder})))
        return recorder

    return register


@pytest.fixture(scope="module")
def committing_app(database_url, tmp_path_factory):
    with fresh_app(database_url, tmp_path_factory.mktemp("jobs")) as app:
        yield app


@pytest.fixture()
def db(committing_app):
    database = committing_app.extensions["market.db"]
    yield database
    with database.session() as session, session.begin():
        for run in session.scalars(select(JobRun)):
            session.delete(run)


def _run(db, period="2026-10", **kwargs):
    job = next(job for job in billing_cli.SCHEDULED_JOBS if job.name == "test-job")
    return runs.run_job(db, job, period, now=NOW, settings={}, progress=lambda line: None,
                        **kwargs)


def _runs(db, name="test-job"):
    with db.session() as session:
        return session.scalars(select(JobRun).where(JobRun.job == name)).all()


def test_periods_are_reckoned_from_the_moment_of_the_run():
    assert runs.daily(NOW) == "2026-11-23"
    assert day_before(NOW) == "2026-11-22"
    assert month_before(NOW) == "2026-10"
    assert month_before(dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)) == "2025-12"
    # 20:00 UTC on the 22nd is already the 23rd on the scheduler's clock in Shanghai.
    job = Job("j", "", lambda ctx: {}, {}, runs.daily, DAILY)
    late = dt.datetime(2026, 11, 22, 20, 0, tzinfo=dt.timezone.utc)
    assert runs.default_period(job, late, "Asia/Shanghai") == "2026-11-23"


def test_a_second_run_for_the_same_period_does_nothing(db, register_job):
    recorder = register_job(Recorder())

    first = _run(db)
    second = _run(db)

    assert first.outcome == "ran" and first.summary == {"handled": "2026-10"}
    assert second.outcome == "already-done" and second.summary == {"handled": "2026-10"}
    assert recorder.calls == ["2026-10"]
    [run] = _runs(db)
    assert (run.status, run.detail) == ("done", {"handled": "2026-10"})
    assert run.finished_at is not None


def test_another_period_is_another_run(db, register_job):
    recorder = register_job(Recorder())

    _run(db, period="2026-09")
    _run(db, period="2026-10")

    assert recorder.calls == ["2026-09", "2026-10"]


def test_a_failed_run_is_recorded_and_can_be_run_again(db, register_job):
    recorder = register_job(Recorder(fail_times=1))

    with pytest.raises(RuntimeError, match="gateway unreachable"):
        _run(db)
    [run] = _runs(db)
    assert run.status == "failed"
    assert run.detail == {"error": "RuntimeError: gateway unreachable"}

    assert _run(db).outcome == "ran"
    assert _run(db).outcome == "already-done"
    assert recorder.calls == ["2026-10", "2026-10"]
    [run] = _runs(db)
    assert (run.status, run.detail) == ("done", {"handled": "2026-10"})


def test_force_runs_a_done_period_again(db, register_job):
    recorder = register_job(Recorder())

    _run(db)
    assert _run(db, force=True).outcome == "ran"

    assert recorder.calls == ["2026-10", "2026-10"]
    [run] = _runs(db)
    assert run.status == "done"


def test_a_run_in_progress_elsewhere_is_left_alone(db, register_job):
    recorder = register_job(Recorder())
    with db.session() as session, session.begin():
        session.add(JobRun(job="test-job", period="2026-10", status="running", detail={}))

    assert _run(db).outcome == "running-elsewhere"
    assert recorder.calls == []


def test_a_period_that_does_not_fit_the_job_is_refused(db, register_job):
    register_job(Recorder())

    with pytest.raises(ValueError, match="does not match"):
        _run(db, period="2026-10-01")
    assert _runs(db) == []


def _race(db, threads: int = 4, **kwargs) -> list:
    barrier = threading.Barrier(threads)
    outcomes, errors = [], []

    def worker():
        barrier.wait()
        try:
            outcomes.append(_run(db, **kwargs).outcome)
        except Exception as error:  # collected and asserted on below
            errors.append(error)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(60)
    assert errors == []
    return outcomes


def test_two_schedulers_racing_for_one_period_run_it_once(db, register_job):
    recorder = register_job(Recorder(delay=0.2))

    outcomes = _race(db)

    assert recorder.calls == ["2026-10"]
    assert sorted(outcomes).count("ran") == 1
    assert set(outcomes) <= {"ran", "running-elsewhere", "already-done"}
    [run] = _runs(db)
    assert run.status == "done"


def test_only_one_of_two_racing_processes_takes_over_a_failed_run(db, register_job):
    recorder = register_job(Recorder(delay=0.2))
    with db.session() as session, session.begin():
        session.add(JobRun(job="test-job", period="2026-10", status="failed",
                           detail={"error": "earlier"}))

    outcomes = _race(db)

    assert recorder.calls == ["2026-10"]
    assert outcomes.count("ran") == 1
    [run] = _runs(db)
    assert (run.status, run.detail) == ("done", {"handled": "2026-10"})


def test_every_job_has_a_name_of_its_own():
    names = [job.name for job in SCHEDULED_JOBS]
    assert len(set(names)) == len(names)
    assert len(JOBS_BY_NAME) == len(JOBS)
    assert set(JOBS_BY_NAME) == {
        "recognize-usage", "post-usage-to-budgets", "renewals", "close-statements",
        "postpaid-invoices", "dunning", "reconcile-payments", "deliver-budget-alerts",
        "expire-uploads"}
    assert SCHEDULED_JOBS[:len(JOBS)] == JOBS


# The CLI and the scheduler, on the suite's usual rolled-back transaction.

def test_run_job_refuses_an_unknown_job_and_lists_the_known_ones(runner):
    result = runner.invoke(args=["billing", "run-job", "no-such-job"])

    assert result.exit_code != 0
    assert "unknown job 'no-such-job'" in result.output
    assert "purge-idempotency" in result.output


def test_run_job_refuses_a_period_of_the_wrong_shape(runner):
    result = runner.invoke(args=["billing", "run-job", "purge-idempotency", "--period", "2026-11"])

    assert result.exit_code != 0
    assert "period '2026-11' is not valid for purge-idempotency" in result.output


def test_run_job_purges_idempotency_records_once_per_day(runner, session):
    first = runner.invoke(args=["billing", "run-job", "purge-idempotency",
                                "--period", "2026-11-23"])
    second = runner.invoke(args=["billing", "run-job", "purge-idempotency",
                                 "--period", "2026-11-23"])

    assert first.exit_code == 0, first.output
    assert "purge-idempotency 2026-11-23: started" in first.output
    assert "summary: {'purged': 0}" in first.output
    assert second.exit_code == 0, second.output
    assert "already done" in second.output
    run = session.scalars(select(JobRun).where(JobRun.job == "purge-idempotency")).one()
    assert (run.period, run.status, run.detail) == ("2026-11-23", "done", {"purged": 0})


def test_run_job_defaults_to_the_period_a_run_now_would_handle(runner, register_job):
    recorder = register_job(Recorder())

    result = runner.invoke(args=["billing", "run-job", "test-job"])

    assert result.exit_code == 0, result.output
    assert recorder.calls == [runs.default_period(TEST_JOB, runs.utcnow(), "Asia/Shanghai")]


def test_a_failing_job_exits_non_zero(runner, register_job):
    register_job(Recorder(fail_times=1))

    result = runner.invoke(args=["billing", "run-job", "test-job", "--period", "2026-10"])

    assert result.exit_code != 0
    assert isinstance(result.exception, RuntimeError)


def test_jobs_lists_schedules_and_last_runs(runner, register_job):
    register_job(Recorder())
    runner.invoke(args=["billing", "run-job", "test-job", "--period", "2026-10"])

    result = runner.invoke(args=["billing", "jobs"])

    assert result.exit_code == 0, result.output
    assert "purge-idempotency: Delete expired idempotency records." in result.output
    assert "schedule: hour=3 minute=30 (Asia/Shanghai)" in result.output
    assert "last run: 2026-10 done" in result.output
    assert "last run: never" in result.output


def test_the_scheduler_has_one_cron_job_per_job_of_the_list(app):
    scheduler = build_scheduler(app)

    scheduled = {job.id: job for job in scheduler.get_jobs()}
    assert sorted(scheduled) == sorted(job.name for job in SCHEDULED_JOBS)
    assert set(JOBS_BY_NAME) < set(scheduled)
    for name, job in scheduled.items():
        assert isinstance(job.trigger, CronTrigger)
        assert str(job.trigger.timezone) == "Asia/Shanghai"
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 3600)
        assert job.args == (app, name)
    assert not scheduler.running


def test_what_the_scheduler_calls_runs_the_current_period(committing_app, db, register_job):
    recorder = register_job(Recorder())

    outcome = scheduled_run(committing_app, "test-job")

    expected = runs.default_period(TEST_JOB, runs.utcnow(), "Asia/Shanghai")
    assert (outcome.outcome, recorder.calls) == ("ran", [expected])
    assert scheduled_run(committing_app, "test-job").outcome == "already-done"
