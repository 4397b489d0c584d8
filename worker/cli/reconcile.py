"""``moment-sb1 reconcile``: the month's books against Moment (``worker.reconcile``)."""
from __future__ import annotations

import json
import sys
from datetime import date

import click

from errors import IntegrationError
from worker.cli.base import load_runtime, main, pick
from worker.reconcile.history import ReconcileHistory
from worker.reconcile.run import ReconcileBusy
from worker.reconcile.run import reconcile as run_reconcile


@main.command()
@click.argument("integration_id")
@click.option("--month", default=None, metavar="YYYY-MM", help="the month (default: this month)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--no-repair", is_flag=True, help="only compare: queue no sync, post nothing")
@click.option("--no-email", is_flag=True, help="send the company no email")
@click.option("--history", is_flag=True, help="show the last runs instead of running one")
def reconcile(integration_id: str, month: str | None, as_json: bool, no_repair: bool, no_email: bool,
              history: bool) -> None:
    """Reconcile a month (avstemming): every invoice Moment finalized has one voucher with its
    amount, revenue per account and VAT code and output VAT equal Moment's, every customer and
    project is in the books as Moment has it. Repairs what Moment owns (syncs it again, posts
    a missing voucher), never changes a posted voucher. Exit code 1 when something differs."""
    rt = load_runtime()
    [integration] = pick(rt, integration_id)
    if history:
        runs = ReconcileHistory(rt.redis, rt.keys).runs(integration.id)
        if as_json:
            click.echo(json.dumps(runs, indent=2))
            return
        for run in runs:
            kinds = ", ".join(f"{k} {v['differing'] + v['repaired']}" for k, v in run["kinds"].items())
            click.echo(f"{run['finished']}  {run['month']}  {'ok' if run['ok'] else 'differences'}  ({kinds})")
        return
    month = month or date.today().strftime("%Y-%m")
    try:
        report = run_reconcile(rt, integration, month, repair=not no_repair, notify=not no_email)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--month") from None
    except IntegrationError as err:
        raise click.ClickException(f"the reconciliation could not read everything: {err}") from None
    except ReconcileBusy as err:
        raise click.ClickException(f"{err}; try again when it is done") from None
    out = report.as_dict()
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        _table(out)
    sys.exit(1 if report.differences else 0)


def _table(out: dict) -> None:
    click.echo(f"Reconciliation of {out['integration']}, {out['month']} ({out['books_calls']} call(s) to the books)")
    click.echo(f"{'kind':<10} {'checked':>8} {'equal':>8} {'repaired':>9} {'differing':>10} {'rounding':>9}")
    for kind, c in out["kinds"].items():
        click.echo(f"{kind:<10} {c['checked']:>8} {c['equal']:>8} {c['repaired']:>9} {c['differing']:>10} "
                   f"{c['rounding']:>9}")
    rows = out["differences"] + out["rounding"]
    if rows:
        click.echo("")
        click.echo(f"{'status':<13} {'record':<32} {'field':<24} {'Moment':>14} {'books':>14}  note")
        for d in rows:
            click.echo(f"{d['status']:<13} {d['record']:<32.32} {d['field']:<24.24} {str(d['moment']):>14} "
                       f"{str(d['books']):>14}  {d['note']}")
    if out["skipped"]:
        click.echo("not compared (refused by the product too, see dead-letters): "
                   + ", ".join(f"{k} {v}" for k, v in out["skipped"].items()))
    click.echo("no differences" if out["ok"] else "differences found" + (" (the company was emailed)"
                                                                         if out["emailed"] else ""))
