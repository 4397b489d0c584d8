"""``moment-sb1``: run, inspect and repair the integration."""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone

import click
import simplejson

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from clients.sb1 import SB1Client
from errors import IntegrationError
from schemas.text import plain
from .app import QUEUE, TASKS, app
from .backfill import run_backfill
from .checks import online_checks, redacted
from .lanes import BULK_QUEUE, LIVE_QUEUE
from .integrations import DATA_TYPES, IntegrationsError, load_integrations
from .metrics import WRITTEN
from .producer import Paused, enqueue as put, enqueue_bulk
from .runtime import get_runtime
from .settings import Settings, SettingsError, unknown_variables
from .state import same_problem
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


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


NODE_PREFIX = "moment-sb1"     # worker nodes are moment-sb1@<host>


class Cli(click.Group):
    """Every command: a problem of the environment is one line and exit code 1, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (RedisError, OperationalError) as err:
            url = redacted(get_runtime().settings.redis_url) if _settings_ok() else "MSB1_REDIS_URL"
            raise click.ClickException(f"Redis is not reachable at {url} ({type(err).__name__}); "
                                       "is it running?") from None
        except (SettingsError, IntegrationsError) as err:
            raise click.ClickException(str(err)) from None


def _settings_ok() -> bool:
    try:
        Settings.from_env()
        return True
    except SettingsError:
        return False


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="moment-sb1", prog_name="moment-sb1")
def main() -> None:
    """Keep SpareBank 1 Regnskap in step with Moment.

    Settings come from MSB1_* environment variables (see .env.example), the companies from
    the integrations file (MSB1_INTEGRATIONS_FILE)."""


@main.command("check-config")
@click.option("--online", is_flag=True, help="also try every part the worker talks to: Redis, the mail "
              "server, the identity server, each company's key and Moment API key, and (for invoices) the "
              "revenue accounts and VAT codes. Writes nothing.")
def check_config(online: bool) -> None:
    """Validate the settings and the integrations file (exit code 1 on any problem)."""
    settings = _settings()
    for problem in unknown_variables():
        click.echo(f"warning: {problem}", err=True)
    try:
        integrations = load_integrations(settings.integrations_file)
    except IntegrationsError as err:
        raise click.ClickException(str(err)) from None
    for i in integrations.values():
        click.echo(f"{i.id}: Moment company {i.moment_company} → {i.sb1_base_url} "
                   f"({', '.join(sorted(i.data_types))}); failures mailed to {i.notify_email}")
    click.echo(f"{len(integrations)} integration(s) OK")
    if not online:
        return
    failed = 0
    for check in online_checks(_runtime()):
        failed += not check.ok
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {plain(check.detail, 300)}")
    if failed:
        raise click.ClickException(f"{failed} check(s) failed")
    click.echo("every check passed")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", "-c", type=click.IntRange(1), default=None,
              help="threads (default MSB1_CONCURRENCY)")
@click.option("--lanes", type=click.Choice(["all", "live"]), default="all", show_default=True,
              help="all: live work first, then bulk; live: live work only (a small process beside the "
                   "others keeps live changes fast while a backfill takes every core)")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None, lanes: str) -> None:
    """Run a Celery worker (thread pool) named moment-sb1@<host>; extra arguments go to Celery."""
    settings = _settings()
    queues = LIVE_QUEUE if lanes == "live" else f"{LIVE_QUEUE},{BULK_QUEUE}"
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency or settings.concurrency),
            "--queues", queues, "--loglevel", settings.log_level, "--hostname", f"{NODE_PREFIX}@%h", *ctx.args]
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
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", _settings().log_level,
            *ctx.args]
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
@click.option("--host", default="0.0.0.0", show_default=True, help="address to listen on")
@click.option("--port", default=8000, type=click.IntRange(1, 65535), show_default=True, help="port to listen on")
@click.option("--threads", default=None, type=click.IntRange(1), help="requests served at once "
              "(default MSB1_WEBHOOK_THREADS)")
def webhooks(host: str, port: int, threads: int | None) -> None:
    """Run the webhook receiver (POST /webhooks/{integration}/{secret})."""
    _runtime()
    click.echo(f"moment-sb1 webhook receiver on http://{host}:{port}/webhooks/<integration>/<secret>")
    serve(host, port, threads)


INTEGRATION_OPTION = click.option("--integration", "integration_id", default=None, metavar="ID",
                                  help="only this integration (default: all)")


@main.command()
@INTEGRATION_OPTION
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(integration_id: str | None, as_json: bool) -> None:
    """Queue, transfers, dead letters, pauses and running backfills, per integration."""
    rt = _runtime()
    last_poll = rt.redis.get(rt.keys.last_poll())
    paused = rt.pauses.all()
    out = {"queue": QUEUE, "queued": rt.redis.llen(QUEUE), "bulk_queued": rt.redis.llen(BULK_QUEUE),
           "held_by_workers": rt.redis.hlen("unacked"),
           "last_poll_seconds_ago": round(time.time() - float(last_poll)) if last_poll else None,
           "integrations": {}}
    for i in _pick(rt, integration_id):
        stats = rt.stats.get(i.id)
        out["integrations"][i.id] = {
            "paused_since": _when(paused[i.id]) if i.id in paused else None,
            "data_types": sorted(i.data_types),
            "records_in_step": {t: rt.state.count(i.id, t) for t in sorted(i.data_types)},
            "counters": {k: int(v) for k, v in stats.items() if ":last_" not in k},
            "dead_letters": rt.dead_letters.count(i.id),
            "poll_cursor": {t: rt.redis.get(rt.keys.cursor(i.id, t)) for t in sorted(i.data_types)},
            "open_circuits": [c.waiting_for for c in rt.circuits.open_for(i.id)],
            "digest_pending": rt.notices.pending(i.id),
            "lanes": {ls.lane: {"waiting": ls.waiting, "running": ls.running, "per_second": ls.per_second,
                                "oldest_waiting_seconds": None if ls.oldest_waiting_s is None
                                else round(ls.oldest_waiting_s), "eta_seconds": ls.eta_s}
                      for ls in rt.lanes.status(i.id)},
            "runs": [{"id": run.id, "kind": run.kind, "data_type": run.data_type, "total": run.total,
                      "done": run.done, "per_second": round(run.rate, 1), "eta_seconds": run.eta,
                      "outcomes": run.outcomes} for run in rt.runs.unfinished(i.id)],
        }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"queues: {out['queued']} live and {out['bulk_queued']} bulk waiting, {out['held_by_workers']} held "
               "by workers (running, or a retry waiting for its time)")
    ago = out["last_poll_seconds_ago"]
    click.echo(f"last safety-net poll: {'never' if ago is None else f'{ago}s ago'}")
    for iid, info in out["integrations"].items():
        click.echo(f"\n{iid} ({', '.join(info['data_types'])})"
                   + (f"  PAUSED since {info['paused_since']}" if info["paused_since"] else ""))
        for t, n in info["records_in_step"].items():
            click.echo(f"  {t}: {n} records transferred")
        for k, v in sorted(info["counters"].items()):
            click.echo(f"  {k}: {v}")
        click.echo(f"  dead letters: {info['dead_letters']}")
        if info["digest_pending"]:
            click.echo(f"  failures waiting for the next digest email: {info['digest_pending']}")
        for circuit in info["open_circuits"]:
            click.echo(f"  waiting: {circuit}")
        for lane, ls in info["lanes"].items():
            if ls["waiting"] or ls["running"] or ls["per_second"]:
                oldest = "" if ls["oldest_waiting_seconds"] is None else \
                    f", oldest waiting {_duration(ls['oldest_waiting_seconds'])}"
                click.echo(f"  {lane}: {ls['waiting']} waiting, {ls['running']} running, {ls['per_second']}/s"
                           f"{oldest}, ETA {_duration(ls['eta_seconds'])}")
        for run in info["runs"]:
            click.echo(f"  {run['kind']} {run['data_type']} ({run['id']}): {run['done']} of {run['total']} done, "
                       f"{run['per_second']}/s, ETA {_duration(run['eta_seconds'])}")
        for t, cursor in info["poll_cursor"].items():
            click.echo(f"  {t} polled up to: {cursor or 'never'}")


@main.command()
@click.argument("what", type=click.Choice(["worker", "beat"]))
@click.option("--node", default=None, help="worker: the Celery node to ping (default moment-sb1@<this host>)")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="worker: seconds to wait for the answer")
@click.option("--max-age", type=float, default=None,
              help="beat: seconds the last poll may be old (default: two poll intervals plus a minute)")
def health(what: str, node: str | None, timeout: float, max_age: float | None) -> None:
    """Exit 0 when healthy, 1 (with the reason) when not: for compose healthchecks.

    worker: the worker node answers a ping through Redis. beat: the safety-net poll ran
    lately (beat writes the time of each poll to Redis)."""
    rt = _runtime()
    if what == "worker":
        node = node or f"{NODE_PREFIX}@{socket.gethostname()}"
        replies = app.control.ping(destination=[node], timeout=timeout)
        if not any(node in reply for reply in replies or []):
            raise click.ClickException(f"worker {node} did not answer within {timeout:g}s")
        click.echo(f"worker ok: {node} answered")
        return
    limit = max_age if max_age is not None else 2 * rt.settings.poll_interval + 60
    last = rt.redis.get(rt.keys.last_poll())
    if last is None:
        raise click.ClickException("beat has not polled yet")
    age = time.time() - float(last)
    if age > limit:
        raise click.ClickException(f"beat's last poll was {age:.0f}s ago (more than {limit:.0f}s)")
    click.echo(f"beat ok: last poll {age:.0f}s ago")


@main.command()
@click.argument("integration_id")
def pause(integration_id: str) -> None:
    """Switch an integration off: nothing is queued for it and its queued syncs wait.

    Webhooks are answered (202, "paused") and the poll leaves its cursor where it is, so
    `resume` picks up every change made during the pause."""
    rt = _runtime()
    [integration] = _pick(rt, integration_id)
    if not rt.pauses.pause(integration.id):
        click.echo(f"{integration.id} was already paused (since {_when(rt.pauses.since(integration.id))})")
        return
    click.echo(f"{integration.id} paused: nothing is queued for it, its queued syncs wait. "
               f"`moment-sb1 resume {integration.id}` switches it on again.")


@main.command()
@click.argument("integration_id")
def resume(integration_id: str) -> None:
    """Switch a paused integration on again, and poll Moment for what changed meanwhile."""
    rt = _runtime()
    [integration] = _pick(rt, integration_id)
    if not rt.pauses.resume(integration.id):
        click.echo(f"{integration.id} was not paused")
        return
    for data_type in sorted(integration.data_types):
        app.send_task("poll.integration", args=[integration.id, data_type])
    click.echo(f"{integration.id} resumed; its waiting syncs go on, and Moment is polled now for the changes "
               "made during the pause")


@main.command()
@click.argument("integration_id")
@click.argument("data_type", type=click.Choice(DATA_TYPES))
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def history(integration_id: str, data_type: str, record_id: int, as_json: bool) -> None:
    """Every sync of one record (by Moment id), newest first: when, outcome, the try,
    which fields changed, the error. Kept MSB1_HISTORY_DAYS after its last sync."""
    rt = _runtime()
    [integration] = _pick(rt, integration_id)
    entries = rt.history.get(integration.id, data_type, record_id)
    if as_json:
        click.echo(json.dumps(entries, indent=2, ensure_ascii=False))
        return
    if not entries:
        click.echo(f"no syncs of {integration.id} {data_type} {record_id} in the last "
                   f"{rt.settings.history_days:g} days")
        return
    number = next((e["number"] for e in entries if e.get("number")), None)
    click.echo(f"{integration.id} {data_type} {record_id}" + (f" (number {plain(number, 40)})" if number else ""))
    for e in entries:
        line = f"  {_when(e['at'])}  {e['outcome']:<15} try {e.get('attempt', 1)}"
        if e.get("changed"):
            line += f"  changed: {', '.join(e['changed'])}"
        if e.get("error"):
            line += f"  error: {plain(e['error'], 300)}"
        click.echo(line)


def _letters(rt, integration_id: str | None, data_type: str | None = None, record_id: int | None = None):
    for i in _pick(rt, integration_id):
        for d in rt.dead_letters.list(i.id):
            if (data_type and d.data_type != data_type) or (record_id and d.record_id != record_id):
                continue
            yield i, d


@main.command("dead-letters")
@INTEGRATION_OPTION
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (one object per dead letter)")
@click.option("--group", is_flag=True, help="one line per problem, with how many records have it")
def dead_letters(integration_id: str | None, as_json: bool, group: bool) -> None:
    """List records that could not be transferred (kept until a replay succeeds)."""
    rt = _runtime()
    letters = [d for _, d in _letters(rt, integration_id)]
    if group:
        groups: dict[tuple, list] = {}
        for d in letters:
            groups.setdefault((d.integration_id, d.data_type, d.kind, same_problem(d.error)), []).append(d)
        rows = [{"integration": k[0], "data_type": k[1], "kind": k[2], "error": k[3], "records": len(v),
                 "moment_ids": [d.record_id for d in v]} for k, v in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
        if as_json:
            click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
            return
        for row in rows:
            ids = ", ".join(map(str, row["moment_ids"][:10])) + (", ..." if row["records"] > 10 else "")
            click.echo(f"{row['records']:>5}  {row['integration']} {row['data_type']} [{row['kind']}]: "
                       f"{plain(row['error'], 200)} (Moment ids {ids})")
        click.echo(f"{len(letters)} dead letter(s) in {len(rows)} group(s)")
        return
    if as_json:
        click.echo(json.dumps([asdict(d) for d in letters], indent=2, ensure_ascii=False))
        return
    for d in letters:
        click.echo(f"{d.integration_id} {d.data_type} {d.record_id} ({plain(d.what, 60)}) failed {d.failures}x, "
                   f"last {_when(d.last_failed_at)} [{d.kind}{'' if d.notified else ', not yet emailed'}]: "
                   f"{plain(d.error, 300)}")
    click.echo(f"{len(letters)} dead letter(s)")


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
    try:
        queued = sum(1 for rid in record_ids if put(integration_id, data_type, rid))
    except Paused as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"queued {queued} {data_type} sync(s) for {integration_id}"
               + (f" ({len(record_ids) - queued} already queued)" if queued < len(record_ids) else ""))


WAIT_OPTION = click.option("--wait", is_flag=True, help="wait until every queued sync has ended, showing "
                           "progress, a rate and an ETA; then print the outcome counts")
TIMEOUT_OPTION = click.option("--timeout", type=float, default=None, metavar="SECONDS",
                              help="with --wait: stop waiting after this long (the syncs go on)")


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
                bar.label = f"{done}/{total} done, {rate:.0f}/s, ETA {_duration(eta)}"
                bar.update(done - shown)
                shown = done
            elif time.monotonic() - last_line >= 5 or done >= total:
                click.echo(f"{done} of {total} done, {rate:.1f}/s, ETA {_duration(eta)}", err=True)
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
    counts: dict[str, int] = {}
    for r in current:
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
@click.option("--data-type", type=click.Choice(DATA_TYPES), default=None, help="only this data type")
@click.option("--id", "record_id", type=int, default=None, help="only this record (Moment id)")
@click.option("--dry-run", is_flag=True, help="list what would be queued; queue nothing")
@WAIT_OPTION
@TIMEOUT_OPTION
def replay(integration_id: str | None, data_type: str | None, record_id: int | None, dry_run: bool,
           wait: bool, timeout: float | None) -> None:
    """Queue dead-lettered records again (they stay listed until they succeed)."""
    rt = _runtime()
    chosen = list(_letters(rt, integration_id, data_type, record_id))
    if dry_run:
        for _, d in chosen:
            click.echo(f"would replay {d.integration_id} {d.data_type} {d.record_id} ({plain(d.what, 60)}): "
                       f"{plain(d.error, 200)}")
        click.echo(f"{len(chosen)} replay(s) would be queued")
        return
    runs, n = [], 0
    by_type: dict[tuple[str, str], list] = {}
    for i, d in chosen:
        by_type.setdefault((i.id, d.data_type), []).append(d)
    for (iid, dt), letters in sorted(by_type.items()):
        if rt.pauses.is_paused(iid):
            click.echo(f"skipped {len(letters)} {dt} of {iid}: the integration is paused", err=True)
            continue
        if dt not in DATA_TYPES:
            click.echo(f"skipped {len(letters)} dead letter(s) of unknown data type {dt!r}", err=True)
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
    click.echo(f"queued {n} replay(s)")
    if wait and runs:
        click.echo(f"replay: {_report(_wait_for(rt, [rt.runs.get(r.id) or r for r in runs], timeout))}")


@main.command()
@INTEGRATION_OPTION
@click.option("--data-type", type=click.Choice(DATA_TYPES), default=None, help="only this data type")
@click.option("--id", "record_id", type=int, default=None, help="only this record (Moment id)")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
def purge(integration_id: str | None, data_type: str | None, record_id: int | None, yes: bool) -> None:
    """Delete dead letters for good (they are not replayed). Asks first."""
    rt = _runtime()
    chosen = list(_letters(rt, integration_id, data_type, record_id))
    if not chosen:
        click.echo("no dead letters match")
        return
    scope = ", ".join(sorted({f"{i.id} {d.data_type}" for i, d in chosen}))
    if not yes:
        click.confirm(f"Delete {len(chosen)} dead letter(s) ({scope})? They will not be replayed.", abort=True)
    removed = sum(rt.dead_letters.resolve(i.id, d.data_type, d.record_id) for i, d in chosen)
    click.echo(f"deleted {removed} dead letter(s)")


@main.command()
@click.argument("integration_id")
@click.option("--data-type", type=click.Choice(DATA_TYPES), default="customers", show_default=True,
              help="what to backfill")
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
def backfill(integration_id: str, data_type: str, since: datetime | None, restart: bool, page_size: int,
             lane: str, wait: bool, timeout: float | None) -> None:
    """Queue a sync of every Moment record of one type (or those modified since a date).

    A page that fails is tried again; if it keeps failing, the backfill stops and the same
    command resumes where it stopped. `status` shows its progress; --wait follows it here."""
    rt = _runtime()
    [integration] = _pick(rt, integration_id)
    if not integration.wants(data_type):
        raise click.ClickException(f"{integration_id} does not transfer {data_type}")
    if rt.pauses.is_paused(integration.id):
        raise click.ClickException(f"{integration_id} is paused; `moment-sb1 resume {integration_id}` first")
    since_utc = since.replace(tzinfo=timezone.utc) if since else None
    run = rt.runs.start(integration.id, data_type, "backfill")
    try:
        result = run_backfill(rt, integration, data_type, since_utc, page_size=page_size, restart=restart,
                              say=lambda line: click.echo(line, err=True), run=run, lane=lane)
    except RedisError as err:
        raise click.ClickException(f"Redis is not reachable ({type(err).__name__}); nothing more was queued. "
                                   "Run the same command again when it is back: it resumes.") from None
    finally:
        try:
            rt.runs.all_queued(run)
        except RedisError:
            pass
    extra = [f"{result.already} already queued"] if result.already else []
    extra += [f"{result.skipped} listed without a usable id, skipped"] if result.skipped else []
    click.echo(f"queued {result.queued} {data_type} sync(s) for {integration_id} from {result.pages} page(s)"
               + (f" ({'; '.join(extra)})" if extra else ""))
    if result.stopped_at is not None:
        raise click.ClickException(f"stopped at page {result.stopped_at}: {result.error}. Run the same command "
                                   "again to resume there.")
    if wait:
        counts = _wait_for(rt, [rt.runs.get(run.id) or run], timeout)
        click.echo(f"backfill: {_report(counts)}")


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
    ro = ReadOnly(integration.sb1_base_url, integration.company_key, real.tokens, http=real.http,
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
