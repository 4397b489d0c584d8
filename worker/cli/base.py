"""The ``moment-sb1`` command group and what its commands share."""
from __future__ import annotations

from datetime import datetime, timezone

import click
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from worker.cli.checks import redacted
from worker.config.integrations import IntegrationsError, require_secrets
from worker.config.settings import Settings, SettingsError
from worker.runtime import get_runtime


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as err:
        raise click.ClickException(str(err)) from None


def runtime_or_exit(*secrets: str):
    """The runtime of a process that runs until stopped (worker, beat, receiver): a problem
    with the settings or the integrations file, or a missing secret of ``secrets`` (the ones
    this process uses), is one line each on stderr (``moment-sb1: ...``) and exit code 2, as
    the worker itself says it."""
    try:
        rt = get_runtime()
        require_secrets(rt.integrations.values(), *secrets)
    except (SettingsError, IntegrationsError) as err:
        for line in str(err).splitlines():
            click.echo(f"moment-sb1: {line}", err=True)
        raise SystemExit(2) from None
    return rt


def load_runtime():
    rt = get_runtime()
    try:
        rt.integrations
    except IntegrationsError as err:
        raise click.ClickException(str(err)) from None
    return rt


def pick(rt, integration_id: str | None):
    if integration_id is None:
        return list(rt.integrations.values())
    if integration_id not in rt.integrations:
        raise click.ClickException(
            f"unknown integration {integration_id!r}; known: {', '.join(sorted(rt.integrations))}")
    return [rt.integrations[integration_id]]


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
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


INTEGRATION_OPTION = click.option("--integration", "integration_id", default=None, metavar="ID",
                                  help="only this integration (default: all)")


WAIT_OPTION = click.option("--wait", is_flag=True, help="wait until every queued sync has ended, showing "
                           "progress, a rate and an ETA; then print the outcome counts")


TIMEOUT_OPTION = click.option("--timeout", type=float, default=None, metavar="SECONDS",
                              help="with --wait: stop waiting after this long (the syncs go on)")
