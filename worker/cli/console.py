"""The operator console (``moment-sb1 console``), its users (``console add-user``), and the
audit log every action writes (``moment-sb1 audit``)."""
from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict

import click

from worker.cli.base import INTEGRATION_OPTION, load_runtime, load_settings, main, pick, when
from worker.console.auth import ROLES, UsersError, set_user
from worker.store.audit import AuditLog

BY_OPTION = click.option("--by", "by", default=None, metavar="NAME",
                         help="who does this, for the audit log (default: your login name)")
REASON_OPTION = click.option("--reason", default="", metavar="TEXT",
                             help="why, for the audit log (no personal data: name records by number or Moment id)")


def AUDIT_OPTIONS(command):      # noqa: N802 (used as the other option decorators are)
    """--by and --reason, for a command that writes to the audit log."""
    return BY_OPTION(REASON_OPTION(command))


def operator(by: str | None) -> str:
    """Who runs this command: ``--by``, else the OS user."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):            # a container user without a name
        return f"uid {os.getuid()}"


def audited(rt, action: str, integration_id: str, *, by: str | None, why: str = "", what: str = "",
            outcome: str = "") -> None:
    """Write one audit entry for a command's action on one integration."""
    AuditLog(rt.redis, rt.keys).write(operator(by), action, integration_id, what=what, why=why, via="cli",
                                      outcome=outcome)


@main.command()
@INTEGRATION_OPTION
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True, help="newest entries shown")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (one object per entry)")
def audit(integration_id: str | None, limit: int, as_json: bool) -> None:
    """Who paused, resumed, replayed, purged or backfilled what, when and why (the command
    line's and the console's actions), newest first."""
    rt = load_runtime()
    if integration_id is not None:
        pick(rt, integration_id)
    entries = AuditLog(rt.redis, rt.keys).read(integration_id, limit)
    if as_json:
        click.echo(json.dumps([asdict(e) for e in entries], indent=2, ensure_ascii=False))
        return
    for e in entries:
        click.echo(f"{when(e.at)}  {e.who} ({e.via})  {e.action} {e.integration}"
                   + (f" {e.what}" if e.what else "") + (f": {e.outcome}" if e.outcome else "")
                   + (f"  why: {e.why}" if e.why else ""))
    if not entries:
        click.echo("no actions recorded" + (f" for {integration_id}" if integration_id else ""))


@main.group(invoke_without_command=True)
@click.option("--host", default=None, help="address to listen on (default MSB1_CONSOLE_HOST, 127.0.0.1)")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="port (default MSB1_CONSOLE_PORT, 8080)")
@click.pass_context
def console(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Run the operator console: the fleet, each company's dead letters, pauses, syncs and
    backfills, a record's history, and the audit log, behind a login (viewer or operator).

    `moment-sb1 console add-user NAME --role operator` adds a user."""
    if ctx.invoked_subcommand is not None:
        return
    from worker.console.app import ConsoleError, serve
    settings = load_settings()
    try:
        serve(settings, host or settings.console_host, port or settings.console_port,
              say=lambda line: click.echo(line, err=True))
    except ConsoleError as err:
        click.echo(f"moment-sb1: {err}", err=True)
        raise SystemExit(2) from None


@console.command("add-user")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="viewer: sees everything; operator: also pauses, resumes and replays")
@click.option("--file", "path", default=None, help="the users file (default MSB1_CONSOLE_USERS_FILE)")
@click.password_option(help="the password (asked when not given; at least 12 characters)")
def add_user(name: str, role: str, path: str | None, password: str) -> None:
    """Add a console user, or set a user's role and password. The file keeps a scrypt hash,
    never the password."""
    path = path or load_settings().console_users_file
    try:
        added = set_user(path, name, role, password)
    except UsersError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{'added' if added else 'updated'} {name} ({role}) in {path}")
