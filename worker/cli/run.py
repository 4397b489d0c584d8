"""Commands that run the product's processes and check its configuration."""
from __future__ import annotations

import socket
import sys
import time

import click
import redis

from schemas.text import plain
from worker.app import startup_problems
from worker.broker import app, beat_timing
from worker.cli.base import NODE_PREFIX, load_runtime, load_settings, main, runtime_or_exit
from worker.cli.checks import affected, by_cause, grouped_checks, missing_secrets, online_checks
from worker.config.queues import BULK_QUEUE, LIVE_QUEUE
from worker.config.settings import unknown_variables
from worker.intake.receiver import serve
from worker.runtime import get_runtime
from worker.store import schema


def refuse_a_newer_state(what: str) -> None:
    """Beat and the receiver never migrate the Redis state (a worker does as it starts):
    they refuse, in one line with exit code 2, a state newer than this release knows."""
    rt = get_runtime()
    try:
        problem = schema.check(rt.redis, rt.keys)
    except redis.RedisError:
        return              # Redis not up yet: the process waits for it as it always has
    if problem:
        click.echo(f"moment-sb1: {what} cannot start: {problem}", err=True)
        raise SystemExit(2)


@main.command("check-config")
@click.option("--online", is_flag=True, help="also try every part the worker talks to: Redis, the mail "
              "server, the identity server, each company's key and Moment API key, and (for invoices) the "
              "revenue accounts and VAT codes. Writes nothing.")
def check_config(online: bool) -> None:
    """Validate the settings, the integrations file and the integrator's credentials: every
    check the worker makes before it starts (``worker.app.startup_problems``, the same
    function), exit code 1 when one fails. Each cause is one line, with the integrations it
    affects (one missing key file shared by 50 companies is one line naming the 50)."""
    load_settings()
    for problem in unknown_variables():
        click.echo(f"warning: {problem}", err=True)
    rt = get_runtime()
    problems = startup_problems(rt)
    if problems:
        raise click.ClickException("\n".join(by_cause(problems)))
    integrations = rt.integrations
    for i in integrations.values():
        click.echo(f"{i.id}: Moment company {i.moment_company} → {i.sb1_base_url} "
                   f"({', '.join(sorted(i.data_types))}); failures mailed to {i.notify_email}")
    for line in missing_secrets(integrations.values()):
        click.echo(f"note: {line}; the process that uses it must have it", err=True)
    click.echo(f"{len(integrations)} integration(s) OK")
    if not online:
        return
    failed = 0
    for check, names in grouped_checks(online_checks(load_runtime()), integrations):
        failed += not check.ok
        click.echo(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}: {plain(check.detail, 300)}"
                   + (f" ({affected(names)})" if names else ""))
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
    settings = runtime_or_exit().settings    # the rest is checked as the worker starts (exit code 2)
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
    command starts it again after a pause (at most one of beat's wake-ups), so the poll goes
    on (its schedule and lock live in Redis). It exits when beat exits cleanly, is stopped
    (SIGTERM, Ctrl-C), or refuses its configuration (exit code 2)."""
    import signal
    import subprocess
    settings = runtime_or_exit().settings
    refuse_a_newer_state("beat")
    longest_pause = beat_timing(settings.poll_interval)[0]
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", settings.log_level, *ctx.args]
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
        if stopping or code in (0, 2):                  # 2: the configuration, said in one line
            raise SystemExit(code)
        pause = 1.0 if time.monotonic() - started > 60 else min(longest_pause, pause * 2)
        click.echo(f"moment-sb1 beat: celery beat exited ({code}); starting it again in {pause:.0f}s", err=True)
        time.sleep(pause)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: every "
              "interface; docker-compose passes it inside its network, where the TLS proxy reaches it)")
@click.option("--port", default=8000, type=click.IntRange(1, 65535), show_default=True, help="port to listen on")
@click.option("--threads", default=None, type=click.IntRange(1), help="requests served at once "
              "(default MSB1_WEBHOOK_THREADS)")
def webhooks(host: str, port: int, threads: int | None) -> None:
    """Run the webhook receiver (POST /webhooks/{integration}/{secret})."""
    rt = runtime_or_exit("webhook_secret")     # and no other secret
    refuse_a_newer_state("the webhook receiver")
    if rt.settings.webhook_metrics_port == port:
        click.echo(f"moment-sb1: MSB1_WEBHOOK_METRICS_PORT must not be the webhook port ({port}): the figures "
                   "name every integration and are never served on the public port", err=True)
        raise SystemExit(2)
    if rt.settings.log_format == "text":         # in JSON, every line is JSON: the receiver logs it
        click.echo(f"moment-sb1 webhook receiver on http://{host}:{port}/webhooks/<integration>/<secret>")
    serve(host, port, threads)


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
    rt = load_runtime()
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
