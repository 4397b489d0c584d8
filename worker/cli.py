"""``moment-sb1``: run, inspect and repair the integration."""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone

import click
import simplejson

from redis.exceptions import RedisError

from clients.sb1 import SB1Client
from errors import IntegrationError
from schemas.text import plain
from .app import QUEUE, TASKS, app
from .backfill import run_backfill
from .integrations import DATA_TYPES, IntegrationsError, load_integrations
from .producer import UnknownDataType, enqueue as put
from .runtime import get_runtime
from .settings import Settings, SettingsError
from .sync import SyncContext
from .webhooks import serve


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as err:
        raise click.ClickException(str(err)) from None


def _runtime():
    rt = get_runtime()
    try:
        rt.integrations
    except IntegrationsError as err:
        raise click.ClickException(str(err)) from None
    return rt


def _pick(rt, integration_id: str | None):
    if integration_id is None:
        return list(rt.integrations.values())
    if integration_id not in rt.integrations:
        raise click.ClickException(
            f"unknown integration {integration_id!r}; known: {', '.join(sorted(rt.integrations))}")
    return [rt.integrations[integration_id]]


@click.group()
def main() -> None:
    """Keep SpareBank 1 Regnskap in step with Moment."""


@main.command("check-config")
def check_config() -> None:
    """Validate the settings and the integrations file."""
    settings = _settings()
    try:
        integrations = load_integrations(settings.integrations_file)
    except IntegrationsError as err:
        raise click.ClickException(str(err)) from None
    for i in integrations.values():
        click.echo(f"{i.id}: Moment company {i.moment_company} → {i.sb1_base_url} "
                   f"({', '.join(sorted(i.data_types))}); failures mailed to {i.notify_email}")
    click.echo(f"{len(integrations)} integration(s) OK")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", "-c", type=int, default=None, help="threads (default MSB1_CONCURRENCY)")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None) -> None:
    """Run a Celery worker (thread pool); extra arguments go to Celery."""
    settings = _settings()
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency or settings.concurrency),
            "--queues", QUEUE, "--loglevel", "INFO", *ctx.args]
    app.worker_main(argv)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--no-restart", is_flag=True, help="exit when beat exits, instead of starting it again")
@click.pass_context
def beat(ctx: click.Context, no_restart: bool) -> None:
    """Run celery beat (the safety-net poll schedule); one is enough, a second one waits.

    Celery beat ends when Redis restarts under it (it is still loading its data, say); this
    command starts it again after a pause, so the poll goes on (its schedule and lock live
    in Redis). It exits when beat exits cleanly or is stopped (SIGTERM, Ctrl-C)."""
    import signal
    import subprocess
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO", *ctx.args]
    if no_restart:
        raise SystemExit(subprocess.call(argv))
    child: subprocess.Popen | None = None
    stopping = False

    def stop(signum, _frame):
        nonlocal stopping
        stopping = True
        if child and child.poll() is None:
            child.send_signal(signum)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pause = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(argv)
        code = child.wait()
        if stopping or code == 0:
            raise SystemExit(code)
        pause = 1.0 if time.monotonic() - started > 60 else min(30.0, pause * 2)
        click.echo(f"moment-sb1 beat: celery beat exited ({code}); starting it again in {pause:.0f}s", err=True)
        time.sleep(pause)


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", default=8000, type=int, show_default=True)
@click.option("--threads", default=None, type=click.IntRange(1), help="requests served at once "
              "(default MSB1_WEBHOOK_THREADS)")
def webhooks(host: str, port: int, threads: int | None) -> None:
    """Run the webhook receiver (POST /webhooks/{integration}/{secret})."""
    _runtime()
    click.echo(f"moment-sb1 webhook receiver on http://{host}:{port}/webhooks/<integration>/<secret>")
    serve(host, port, threads)


@main.command()
@click.option("--integration", "integration_id", default=None)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(integration_id: str | None, as_json: bool) -> None:
    """Queue length, transfers and dead letters per integration."""
    rt = _runtime()
    last_poll = rt.redis.get(rt.keys.last_poll())
    out = {"queue": QUEUE, "queued": rt.redis.llen(QUEUE),
           "last_poll_seconds_ago": round(time.time() - float(last_poll)) if last_poll else None,
           "integrations": {}}
    for i in _pick(rt, integration_id):
        stats = rt.stats.get(i.id)
        out["integrations"][i.id] = {
            "data_types": sorted(i.data_types),
            "records_in_step": {t: rt.state.count(i.id, t) for t in sorted(i.data_types)},
            "counters": {k: int(v) for k, v in stats.items() if ":last_" not in k},
            "dead_letters": len(rt.dead_letters.list(i.id)),
            "poll_cursor": {t: rt.redis.get(rt.keys.cursor(i.id, t)) for t in sorted(i.data_types)},
            "open_circuits": [f"{c.service} ({c.reason} since {c.since_text})" for c in rt.circuits.open_for(i.id)],
            "digest_pending": rt.notices.pending(i.id),
        }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"queue {out['queue']}: {out['queued']} waiting")
    ago = out["last_poll_seconds_ago"]
    click.echo(f"last safety-net poll: {'never' if ago is None else f'{ago}s ago'}")
    for iid, info in out["integrations"].items():
        click.echo(f"\n{iid} ({', '.join(info['data_types'])})")
        for t, n in info["records_in_step"].items():
            click.echo(f"  {t}: {n} records transferred")
        for k, v in sorted(info["counters"].items()):
            click.echo(f"  {k}: {v}")
        click.echo(f"  dead letters: {info['dead_letters']}")
        if info["digest_pending"]:
            click.echo(f"  failures waiting for the next digest email: {info['digest_pending']}")
        for circuit in info["open_circuits"]:
            click.echo(f"  waiting: {circuit}")
        for t, cursor in info["poll_cursor"].items():
            click.echo(f"  {t} polled up to: {cursor or 'never'}")


@main.command()
@click.argument("what", type=click.Choice(["beat"]))
@click.option("--max-age", type=float, default=None,
              help="seconds the last poll may be old (default: two poll intervals plus a minute)")
def health(what: str, max_age: float | None) -> None:
    """Exit 0 when healthy, 1 (with the reason) when not: for compose healthchecks.

    beat: the safety-net poll ran lately (beat writes the time of each poll to Redis)."""
    rt = _runtime()
    limit = max_age if max_age is not None else 2 * rt.settings.poll_interval + 60
    try:
        last = rt.redis.get(rt.keys.last_poll())
    except RedisError as err:
        raise click.ClickException(f"Redis is not reachable ({type(err).__name__})") from None
    if last is None:
        raise click.ClickException("beat has not polled yet")
    age = time.time() - float(last)
    if age > limit:
        raise click.ClickException(f"beat's last poll was {age:.0f}s ago (more than {limit:.0f}s)")
    click.echo(f"beat ok: last poll {age:.0f}s ago")


@main.command("dead-letters")
@click.option("--integration", "integration_id", default=None)
def dead_letters(integration_id: str | None) -> None:
    """List records that could not be transferred."""
    rt = _runtime()
    count = 0
    for i in _pick(rt, integration_id):
        for d in rt.dead_letters.list(i.id):
            count += 1
            when = datetime.fromtimestamp(d.last_failed_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            click.echo(f"{i.id} {d.data_type} {d.record_id} ({plain(d.what, 60)}) failed {d.failures}x, "
                       f"last {when} UTC [{d.kind}{'' if d.notified else ', not yet emailed'}]: "
                       f"{plain(d.error, 300)}")
    click.echo(f"{count} dead letter(s)")


@main.command()
@click.argument("integration_id")
@click.argument("data_type", type=click.Choice(DATA_TYPES))
@click.argument("record_ids", nargs=-1, type=int, required=True)
def enqueue(integration_id: str, data_type: str, record_ids: tuple[int, ...]) -> None:
    """Queue syncs of records by Moment id."""
    rt = _runtime()
    [integration] = _pick(rt, integration_id)
    if not integration.wants(data_type):
        raise click.ClickException(f"{integration_id} does not transfer {data_type}")
    queued = sum(1 for rid in record_ids if put(integration_id, data_type, rid))
    click.echo(f"queued {queued} {data_type} sync(s) for {integration_id}"
               + (f" ({len(record_ids) - queued} already queued)" if queued < len(record_ids) else ""))


@main.command()
@click.option("--integration", "integration_id", default=None)
@click.option("--data-type", type=click.Choice(DATA_TYPES), default=None)
@click.option("--id", "record_id", type=int, default=None)
def replay(integration_id: str | None, data_type: str | None, record_id: int | None) -> None:
    """Queue dead-lettered records again (they stay listed until they succeed)."""
    rt = _runtime()
    n = 0
    for i in _pick(rt, integration_id):
        for d in rt.dead_letters.list(i.id):
            if (data_type and d.data_type != data_type) or (record_id and d.record_id != record_id):
                continue
            try:
                put(i.id, d.data_type, d.record_id)
            except UnknownDataType as err:
                click.echo(f"skipped {d.what}: {err}", err=True)
                continue
            n += 1
    click.echo(f"queued {n} replay(s)")


@main.command()
@click.argument("integration_id")
@click.option("--data-type", type=click.Choice(DATA_TYPES), default="customers", show_default=True)
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]), default=None,
              help="only records modified since (UTC)")
@click.option("--restart", is_flag=True, help="start from the first page, not where a stopped run ended")
@click.option("--page-size", type=click.IntRange(1, 1000), default=200, show_default=True,
              help="records per page asked of Moment")
def backfill(integration_id: str, data_type: str, since: datetime | None, restart: bool, page_size: int) -> None:
    """Queue a sync of every Moment record of one type (or those modified since a date).

    A page that fails is tried again; if it keeps failing, the backfill stops and the same
    command resumes where it stopped."""
    rt = _runtime()
    [integration] = _pick(rt, integration_id)
    if not integration.wants(data_type):
        raise click.ClickException(f"{integration_id} does not transfer {data_type}")
    since_utc = since.replace(tzinfo=timezone.utc) if since else None
    try:
        result = run_backfill(rt, integration, data_type, since_utc, page_size=page_size, restart=restart,
                              say=lambda line: click.echo(line, err=True))
    except RedisError as err:
        raise click.ClickException(f"Redis is not reachable ({type(err).__name__}); nothing more was queued. "
                                   "Run the same command again when it is back: it resumes.") from None
    extra = [f"{result.already} already queued"] if result.already else []
    extra += [f"{result.skipped} listed without a usable id, skipped"] if result.skipped else []
    click.echo(f"queued {result.queued} {data_type} sync(s) for {integration_id} from {result.pages} page(s)"
               + (f" ({'; '.join(extra)})" if extra else ""))
    if result.stopped_at is not None:
        raise click.ClickException(f"stopped at page {result.stopped_at}: {result.error}. Run the same command "
                                   "again to resume there.")


@main.command("dry-run")
@click.argument("integration_id")
@click.argument("data_type", type=click.Choice(DATA_TYPES))
@click.argument("record_id", type=int)
def dry_run(integration_id: str, data_type: str, record_id: int) -> None:
    """Fetch, map and check one record and show what would be written; write nothing."""

    rt = _runtime()
    [integration] = _pick(rt, integration_id)
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
    ro = ReadOnly(integration.sb1_base_url, integration.company_key, real.tokens, session=real.session,
                  timeouts=real.timeouts)
    ctx = SyncContext(rt, integration, data_type, record_id, dry_run=True, _clients={"sb1": ro})
    app.loader.import_default_modules()      # the task modules the worker loads (conf.include)
    body = app.tasks[TASKS[data_type]].body
    try:
        outcome = body(ctx)
    except IntegrationError as err:
        click.echo(f"{ctx.what}: would FAIL: {err}")
        sys.exit(1)
    click.echo(f"{ctx.what}: would be {outcome}")
    for method, route, payload in writes:
        text = simplejson.dumps(payload, indent=2, ensure_ascii=False, use_decimal=True)
        click.echo(f"{method} {route}\n{text}")


if __name__ == "__main__":
    main()
