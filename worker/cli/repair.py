"""Commands that change what happens: pause, queue, replay, purge, backfill."""
from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timezone

import click
import simplejson
from redis.exceptions import RedisError

from clients.sb1 import SB1Client
from errors import IntegrationError
from schemas.datatypes import CHOSEN_TYPES, DATA_TYPES
from schemas.text import plain, shape
from worker.broker import app, publish_poll, task_name
from worker.cli.base import INTEGRATION_OPTION, TIMEOUT_OPTION, WAIT_OPTION, duration, load_runtime, main, pick, when
from worker.cli.console import AUDIT_OPTIONS, audited
from worker.cli.inspect import find_dead_letters
from worker.console.actions import describe
from worker.intake.backfill import run_backfill
from worker.intake.producer import Paused, enqueue_bulk
from worker.intake.producer import enqueue as put
from worker.ops.metrics import WRITTEN
from worker.sync.context import SyncContext


@main.command()
@click.argument("integration_id")
@AUDIT_OPTIONS
def pause(integration_id: str, by: str | None, reason: str) -> None:
    """Switch an integration off: nothing is queued for it and its queued syncs wait.

    Webhooks are answered (202, "paused") and the poll leaves its cursor where it is, so
    `resume` picks up every change made during the pause."""
    rt = load_runtime()
    [integration] = pick(rt, integration_id)
    if not rt.pauses.pause(integration.id):
        audited(rt, "pause", integration.id, by=by, why=reason, outcome="already paused")
        click.echo(f"{integration.id} was already paused (since {when(rt.pauses.since(integration.id))})")
        return
    audited(rt, "pause", integration.id, by=by, why=reason, outcome="paused")
    click.echo(f"{integration.id} paused: nothing is queued for it, its queued syncs wait. "
               f"`moment-sb1 resume {integration.id}` switches it on again.")


@main.command()
@click.argument("integration_id")
@AUDIT_OPTIONS
def resume(integration_id: str, by: str | None, reason: str) -> None:
    """Switch a paused integration on again, and poll Moment for what changed meanwhile."""
    rt = load_runtime()
    [integration] = pick(rt, integration_id)
    if not rt.pauses.resume(integration.id):
        audited(rt, "resume", integration.id, by=by, why=reason, outcome="was not paused")
        click.echo(f"{integration.id} was not paused")
        return
    audited(rt, "resume", integration.id, by=by, why=reason, outcome="resumed; polled now")
    for data_type in sorted(integration.data_types):
        publish_poll(integration.id, data_type, fresh=True)     # even if a poll ran moments ago
    click.echo(f"{integration.id} resumed; its waiting syncs go on, and Moment is polled now for the changes "
               "made during the pause")


@main.command()
@click.argument("integration_id")
@click.argument("data_type", type=click.Choice(list(DATA_TYPES)))
@click.argument("record_ids", nargs=-1, type=int, required=True)
def enqueue(integration_id: str, data_type: str, record_ids: tuple[int, ...]) -> None:
    """Queue syncs of records by Moment id."""
    rt = load_runtime()
    [integration] = pick(rt, integration_id)
    if not integration.wants(data_type):
        raise click.ClickException(f"{integration_id} does not transfer {data_type}")
    try:
        queued = sum(1 for rid in record_ids if put(integration_id, data_type, rid))
    except Paused as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"queued {queued} {data_type} sync(s) for {integration_id}"
               + (f" ({len(record_ids) - queued} already queued)" if queued < len(record_ids) else ""))


def _wait_for(rt, runs: list, timeout: float | None) -> dict[str, int]:
    """Follow runs to their end; return the outcome counts of all of them."""
    deadline = time.monotonic() + timeout if timeout else None
    tty = sys.stderr.isatty()
    last_line = 0.0
    total = sum(r.total for r in runs)
    bar = click.progressbar(length=total, label="syncing", show_eta=False, file=sys.stderr) if tty else None
    shown = 0
    try:
        while True:
            current = [rt.runs.get(r.id) or r for r in runs]
            done = sum(r.done for r in current)
            total = sum(r.total for r in current)
            elapsed = max(1e-6, time.time() - min(r.started for r in current))
            rate = done / elapsed
            eta = (total - done) / rate if rate > 0 else None
            if bar is not None:
                bar.label = f"{done}/{total} done, {rate:.0f}/s, ETA {duration(eta)}"
                bar.update(done - shown)
                shown = done
            elif time.monotonic() - last_line >= 5 or done >= total:
                click.echo(f"{done} of {total} done, {rate:.1f}/s, ETA {duration(eta)}", err=True)
                last_line = time.monotonic()
            if all(r.finished for r in current):
                break
            if deadline and time.monotonic() > deadline:
                raise click.ClickException(f"stopped waiting after {timeout:g}s with {done} of {total} done; "
                                           "the syncs go on (see `moment-sb1 status`)")
            time.sleep(0.5)
    finally:
        if bar is not None:
            bar.render_finish()
    return _outcomes(current)


def _outcomes(runs: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in runs:
        for outcome, n in r.outcomes.items():
            counts[outcome] = counts.get(outcome, 0) + n
    return counts


def _report(counts: dict[str, int]) -> str:
    written = sum(counts.get(o, 0) for o in WRITTEN)
    failed = counts.get("failed", 0)
    rest = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()) if o not in (*WRITTEN, "failed"))
    return f"{written} written, {failed} failed" + (f", {rest}" if rest else "") + \
        (f" ({', '.join(f'{counts[o]} {o}' for o in WRITTEN if counts.get(o))})" if written else "")


@main.command()
@INTEGRATION_OPTION
@click.option("--data-type", type=click.Choice(list(DATA_TYPES)), default=None, help="only this data type")
@click.option("--id", "record_id", type=int, default=None, help="only this record (Moment id)")
@click.option("--dry-run", is_flag=True, help="list what would be queued; queue nothing")
@WAIT_OPTION
@TIMEOUT_OPTION
@AUDIT_OPTIONS
def replay(integration_id: str | None, data_type: str | None, record_id: int | None, dry_run: bool,
           wait: bool, timeout: float | None, by: str | None, reason: str) -> None:
    """Queue dead-lettered records again (they stay listed until they succeed)."""
    rt = load_runtime()
    chosen = list(find_dead_letters(rt, integration_id, data_type, record_id))
    if dry_run:
        for _, d in chosen:
            click.echo(f"would replay {d.integration_id} {d.data_type} {d.record_id} ({plain(d.what, 60)}): "
                       f"{plain(d.error, 200)}")
        click.echo(f"{len(chosen)} replay(s) would be queued")
        return
    runs, n, skipped = [], 0, 0
    by_type: dict[tuple[str, str], list] = {}
    for i, d in chosen:
        by_type.setdefault((i.id, d.data_type), []).append(d)
    for (iid, dt), letters in sorted(by_type.items()):
        if rt.pauses.is_paused(iid):
            click.echo(f"skipped {len(letters)} {dt} of {iid}: the integration is paused", err=True)
            skipped += len(letters)
            continue
        if dt not in DATA_TYPES:
            click.echo(f"skipped {len(letters)} dead letter(s) of unknown data type {dt!r}", err=True)
            skipped += len(letters)
            continue
        run = rt.runs.start(iid, dt, "replay")
        rt.runs.mark(run, [d.record_id for d in letters])
        if len(letters) > 1:                # many: the bulk lane, in turn with other companies
            n += enqueue_bulk(iid, dt, [d.record_id for d in letters], runtime=rt)
        else:
            put(iid, dt, letters[0].record_id)
            n += 1
        rt.runs.all_queued(run)
        runs.append(run)
    for iid in sorted({i.id for i, _ in chosen}):          # one audit entry per integration
        letters = [d for i, d in chosen if i.id == iid]
        audited(rt, "replay", iid, by=by, why=reason, what=describe(letters),
                outcome="skipped: paused" if rt.pauses.is_paused(iid) else "queued")
    click.echo(f"queued {n} replay(s)")
    failed = 0
    if wait and runs:
        counts = _wait_for(rt, [rt.runs.get(r.id) or r for r in runs], timeout)
        failed = counts.get("failed", 0)
        click.echo(f"replay: {_report(counts)}")
    if skipped or failed:       # exit code 1: not everything asked for was replayed, or it failed again
        sys.exit(1)


@main.command()
@INTEGRATION_OPTION
@click.option("--data-type", type=click.Choice(list(DATA_TYPES)), default=None, help="only this data type")
@click.option("--id", "record_id", type=int, default=None, help="only this record (Moment id)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@AUDIT_OPTIONS
def purge(integration_id: str | None, data_type: str | None, record_id: int | None, yes: bool, by: str | None,
          reason: str) -> None:
    """Delete dead letters for good (they are not replayed). Asks first."""
    rt = load_runtime()
    chosen = list(find_dead_letters(rt, integration_id, data_type, record_id))
    if not chosen:
        click.echo("no dead letters match")
        return
    scope = ", ".join(sorted({f"{i.id} {d.data_type}" for i, d in chosen}))
    if not yes:
        click.confirm(f"Delete {len(chosen)} dead letter(s) ({scope})? They will not be replayed.", abort=True)
    removed = sum(rt.dead_letters.resolve(i.id, d.data_type, d.record_id) for i, d in chosen)
    for iid in sorted({i.id for i, _ in chosen}):          # one audit entry per integration
        audited(rt, "purge", iid, by=by, why=reason, what=describe([d for i, d in chosen if i.id == iid]),
                outcome="deleted")
    click.echo(f"deleted {removed} dead letter(s)")


def in_dependency_order(data_types) -> list[str]:
    """The chosen types a company selects, each after the types it depends on (customers,
    projects, invoices): queued in this order, a company's bulk lane syncs them in it."""
    order: list[str] = []

    def add(name: str) -> None:
        for dep in DATA_TYPES[name].depends_on:
            if dep in data_types:
                add(dep)
        if name not in order:
            order.append(name)
    for name in CHOSEN_TYPES:
        if name in data_types:
            add(name)
    return order


def _backfill_one(rt, integration, data_type: str, since_utc, *, restart: bool, page_size: int, lane: str,
                  say) -> tuple[object, object]:
    """Queue one company's records of one type: (its run, run_backfill's result)."""
    run = rt.runs.start(integration.id, data_type, "backfill")
    try:
        result = run_backfill(rt, integration, data_type, since_utc, page_size=page_size, restart=restart,
                              say=say, run=run, lane=lane)
    except RedisError as err:
        raise click.ClickException(f"Redis is not reachable ({type(err).__name__}); nothing more was queued. "
                                   "Run the same command again when it is back: it resumes.") from None
    finally:
        try:
            rt.runs.all_queued(run)
        except RedisError:
            pass
    return run, result


@main.command()
@click.argument("integration_id", required=False)
@click.option("--all", "every", is_flag=True, help="every integration (one summary line per company)")
@click.option("--data-type", type=click.Choice([*CHOSEN_TYPES, "all"]), default=None,
              help="what to backfill; all: every type the company selects, in dependency order "
                   "(customers, projects, invoices)  [default: customers; with --all: all]")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="only records modified since (UTC)")
@click.option("--restart", is_flag=True, help="start from the first page, not where a stopped run ended")
@click.option("--page-size", type=click.IntRange(1, 1000), default=200, show_default=True,
              help="records per page asked of Moment")
@click.option("--lane", type=click.Choice(["bulk", "live"]), default="bulk", show_default=True,
              help="bulk: behind live changes, in turn with other companies' bulk work; live: "
              "queued like changes (only to compare, as the fairness benchmark does)")
@WAIT_OPTION
@TIMEOUT_OPTION
@AUDIT_OPTIONS
def backfill(integration_id: str | None, every: bool, data_type: str | None, since: datetime | None,
             restart: bool, page_size: int, lane: str, wait: bool, timeout: float | None, by: str | None,
             reason: str) -> None:
    """Queue a sync of every Moment record of one type (or those modified since a date), for
    one integration or, with --all, for every one (onboarding a fleet is one command).

    A page that fails is tried again; if it keeps failing, that company's backfill stops and
    the same command resumes where it stopped. `status` shows the progress; --wait follows it
    here. Exit code 1 when a company's backfill stopped, was skipped (paused) or, with --wait,
    a record failed."""
    rt = load_runtime()
    if every == (integration_id is not None):
        raise click.ClickException("name one integration, or --all for every one")
    integrations = pick(rt, integration_id)
    data_type = data_type or ("all" if every else "customers")
    if not every:
        [integration] = integrations
        if data_type != "all" and not integration.wants(data_type):
            raise click.ClickException(f"{integration_id} does not transfer {data_type}")
        if rt.pauses.is_paused(integration.id):
            raise click.ClickException(f"{integration_id} is paused; `moment-sb1 resume {integration_id}` first")
    since_utc = since.replace(tzinfo=timezone.utc) if since else None
    runs: dict[str, list] = {}
    problems: set[str] = set()        # the integrations that need attention
    for integration in sorted(integrations, key=lambda i: i.id):
        iid = integration.id
        types = in_dependency_order(integration.data_types if data_type == "all" else
                                    {data_type} & integration.data_types)
        if not types:
            continue
        what = ", ".join(types) + (f" since {since_utc:%Y-%m-%d %H:%M:%S}" if since_utc else "")
        if rt.pauses.is_paused(iid):
            problems.add(iid)
            audited(rt, "backfill", iid, by=by, why=reason, what=what, outcome="skipped: paused")
            click.echo(f"{iid}: SKIPPED: paused (`moment-sb1 resume {iid}` first)")
            continue
        queued, stopped = [], []
        for dt in types:
            run, result = _backfill_one(rt, integration, dt, since_utc, restart=restart, page_size=page_size,
                                        lane=lane, say=lambda line, dt=dt: click.echo(f"{iid} {dt}: {line}", err=True))
            runs.setdefault(iid, []).append(run)
            extra = [f"{result.already} already queued"] if result.already else []
            extra += [f"{result.skipped} listed without a usable id, skipped"] if result.skipped else []
            queued.append(f"{result.queued} {dt}" + ("" if every else f" sync(s) for {iid}")
                          + f" from {result.pages} page(s)" + (f" ({'; '.join(extra)})" if extra else ""))
            if not every:
                click.echo(f"queued {queued[-1]}")
            if result.stopped_at is not None:
                stopped.append(f"{dt} stopped at page {result.stopped_at}: {result.error}")
                break           # what depends on it waits for the same command to resume
        audited(rt, "backfill", iid, by=by, why=reason, what=what, outcome=("stopped; " if stopped else "")
                + "queued " + ", ".join(re.match(r"\d+ \w+", q)[0] for q in queued))
        if not every and stopped:
            raise click.ClickException(f"{stopped[0].split(' ', 1)[1]}. Run the same command again to resume there.")
        if stopped:
            problems.add(iid)
        if every:
            click.echo(f"{iid}: {'STOPPED ' + '; '.join(stopped) + '; ' if stopped else ''}queued "
                       + ", ".join(queued))
    if wait and runs:
        _wait_for(rt, [r for rs in runs.values() for r in rs], timeout)
        for iid, rs in sorted(runs.items()):
            counts = _outcomes([rt.runs.get(r.id) or r for r in rs])
            if counts.get("failed"):
                problems.add(iid)
            click.echo(f"{iid + ': ' if every else ''}backfill: {_report(counts)}")
    if problems:
        if every:
            click.echo(f"{len(problems)} integration(s) need attention (above); the same command resumes a stopped "
                       "backfill where it stopped", err=True)
        sys.exit(1)


# Strings of a body that say nothing of a person: dates and times, GUIDs (``_createguid``)
_NOT_PERSONAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+([+-][0-9:]+|Z)?)?"
                           r"|[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def without_values(node):
    """A body as the dry run shows it: its structure, numbers, dates and IDs, and every other
    text by its shape (a name, an email, an address: personal data stays out of the CLI)."""
    if isinstance(node, dict):
        return {k: without_values(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_values(v) for v in node]
    if isinstance(node, str) and not _NOT_PERSONAL.fullmatch(node):
        return f"({shape(node)})"
    return node


@main.command("dry-run")
@click.argument("integration_id")
@click.argument("data_type", type=click.Choice(list(DATA_TYPES)))
@click.argument("record_id", type=int)
def dry_run(integration_id: str, data_type: str, record_id: int) -> None:
    """Fetch, map and check one record and show what would be written; write nothing.
    Texts are shown by their shape ("(14 characters: letters and a space)"), not as they are."""

    rt = load_runtime()
    [integration] = pick(rt, integration_id)
    writes: list[tuple[str, str, dict]] = []

    class ReadOnly(SB1Client):
        def request(self, method, route, **kwargs):
            if method != "GET":       # a safety net under the overrides below
                raise RuntimeError(f"dry run: refused to send {method} {route}")
            return super().request(method, route, **kwargs)

        def create(self, route, body):
            writes.append(("POST", route, body))
            return {"ID": 0}

        def update(self, route, entity_id, body):
            writes.append(("PUT", f"{route}/{entity_id}", body))
            return body

        def action(self, route, action, body):
            writes.append(("POST", f"{route}?action={action}", body))
            return [{"ID": 0}]

    real = rt.sb1(integration)
    ro = ReadOnly(integration.sb1_base_url, integration.company_key, real.tokens, http=real.http,
                  timeouts=real.timeouts)
    ctx = SyncContext(rt, integration, data_type, record_id, dry_run=True, _clients={"sb1": ro})
    app.loader.import_default_modules()      # the task modules the worker loads (conf.include)
    body = app.tasks[task_name(data_type)].body
    try:
        outcome = body(ctx)
    except IntegrationError as err:
        click.echo(f"{ctx.what}: would FAIL: {err}")
        sys.exit(1)
    click.echo(f"{ctx.what}: would be {outcome}")
    for method, route, payload in writes:
        text = simplejson.dumps(without_values(payload), indent=2, ensure_ascii=False, use_decimal=True)
        click.echo(f"{method} {route}\n{text}")
