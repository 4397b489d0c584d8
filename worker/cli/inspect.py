"""Commands that show what the product is doing and has done."""
from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from schemas.datatypes import DATA_TYPES
from schemas.text import plain
from worker.cli.base import INTEGRATION_OPTION, duration, load_runtime, main, pick, when
from worker.cli.events import plan_line
from worker.config.queues import BULK_QUEUE, LIVE_QUEUE
from worker.store.fleet import fleet
from worker.store.records import same_problem


@main.command()
@click.argument("integration", required=False, metavar="[INTEGRATION]")
@INTEGRATION_OPTION
@click.option("--table", is_flag=True, help="the fleet: one row per company, problems first")
@click.option("--problems", is_flag=True, help="only the companies that need attention (a table); exit 1 when any")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status(integration: str | None, integration_id: str | None, table: bool, problems: bool, as_json: bool) -> None:
    """Queue, transfers, dead letters, pauses and running backfills, per integration; or
    (--table, --problems) one row per company: paused, circuits, dead letters, backlog per
    lane, last write, poll lag, the last error."""
    rt = load_runtime()
    integration_id = integration or integration_id
    if table or problems:
        fleet_table(rt, integration_id, problems, as_json)
        return
    last_poll = rt.redis.get(rt.keys.last_poll())
    paused = rt.pauses.all()
    out = {"queue": LIVE_QUEUE, "queued": rt.redis.llen(LIVE_QUEUE), "bulk_queued": rt.redis.llen(BULK_QUEUE),
           "held_by_workers": rt.redis.hlen("unacked"),
           "last_poll_seconds_ago": round(time.time() - float(last_poll)) if last_poll else None,
           "integrations": {}}
    for i in pick(rt, integration_id):
        stats = rt.stats.get(i.id)
        out["integrations"][i.id] = {
            "paused_since": when(paused[i.id]) if i.id in paused else None,
            "data_types": sorted(i.data_types),
            "records_in_step": {t: rt.state.count(i.id, t) for t in sorted(i.data_types)},
            "counters": {k: int(v) for k, v in stats.items() if ":last_" not in k},
            "dead_letters": rt.dead_letters.count(i.id),
            "poll_cursor": {t: rt.redis.get(rt.keys.cursor(i.id, t)) for t in sorted(i.data_types)},
            "open_circuits": [c.waiting_for for c in rt.circuits.open_for(i.id)],
            "rate_limits": rate_limits(rt, i),
            "digest_pending": rt.notices.pending(i.id),
            "events": plan_line(rt, i),
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
        click.echo(f"  changes made in the books: {info['events']}")
        if info["digest_pending"]:
            click.echo(f"  failures waiting for the next digest email: {info['digest_pending']}")
        for service, buckets in info["rate_limits"].items():
            click.echo(f"  {service} rate limit: " + ", ".join(
                f"{b['bucket']} {b['calls_per_second']:g} of {b['ceiling']:g} calls/s" for b in buckets))
        for circuit in info["open_circuits"]:
            click.echo(f"  waiting: {circuit}")
        for lane, ls in info["lanes"].items():
            if ls["waiting"] or ls["running"] or ls["per_second"]:
                oldest = "" if ls["oldest_waiting_seconds"] is None else \
                    f", oldest waiting {duration(ls['oldest_waiting_seconds'])}"
                click.echo(f"  {lane}: {ls['waiting']} waiting, {ls['running']} running, {ls['per_second']}/s"
                           f"{oldest}, ETA {duration(ls['eta_seconds'])}")
        for run in info["runs"]:
            click.echo(f"  {run['kind']} {run['data_type']} ({run['id']}): {run['done']} of {run['total']} done, "
                       f"{run['per_second']}/s, ETA {duration(run['eta_seconds'])}")
        for t, cursor in info["poll_cursor"].items():
            click.echo(f"  {t} polled up to: {cursor or 'never'}")


TABLE_COLUMNS = ("company", "paused", "circuits", "dead", "live", "bulk", "last write", "poll lag", "last error")


def fleet_table(rt, integration_id: str | None, only_problems: bool, as_json: bool) -> None:
    rows = fleet(rt, pick(rt, integration_id))
    shown = [r for r in rows if r.problems] if only_problems else rows
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in shown], indent=2, ensure_ascii=False))
    else:
        now = time.time()
        lines = [TABLE_COLUMNS] + [(
            r.integration, "-" if r.paused_since is None else f"{duration(now - r.paused_since)} ago",
            ", ".join(r.circuits) or "-", str(r.dead_letters), str(r.backlog.get("live", 0)),
            str(r.backlog.get("bulk", 0)), "never" if r.last_write is None else f"{duration(now - r.last_write)} ago",
            "never" if r.poll_lag_seconds is None else duration(r.poll_lag_seconds),
            plain(r.last_error, 60) if r.last_error else "-") for r in shown]
        widths = [max(len(line[k]) for line in lines) for k in range(len(TABLE_COLUMNS) - 1)]
        for line in lines:
            click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1])
        needing = sum(1 for r in rows if r.problems)
        click.echo(f"{needing} of {len(rows)} compan{'y' if len(rows) == 1 else 'ies'} need attention"
                   + (": " + ", ".join(f"{r.integration} ({', '.join(r.problems)})" for r in rows if r.problems)
                      if needing and needing <= 10 else ""))
    if only_problems and shown:
        raise SystemExit(1)


def rate_limits(rt, integration) -> dict[str, list[dict]]:
    """Per service, the learned rate of each bucket against its ceiling (limits that are off: left out)."""
    out = {}
    for service, buckets in rt.rate_buckets(integration).items():
        named = [(name, b) for name, b in zip(("company", "host"), buckets) if b.rate > 0]
        if named:
            rates = rt.limiter.learned(tuple(b for _, b in named))
            out[service] = [{"bucket": name, "calls_per_second": round(rate, 1), "ceiling": b.rate}
                            for (name, b), rate in zip(named, rates)]
    return out


@main.command()
@click.argument("integration_id")
@click.argument("data_type", type=click.Choice(list(DATA_TYPES)))
@click.argument("record", metavar="MOMENT_ID")
@click.option("--number", "by_number", is_flag=True, help="MOMENT_ID is the customer, project or invoice number "
              "as the accountant quotes it, not Moment's id (a number that is not a valid one of its kind was "
              "never kept: find that record by its Moment id)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def history(integration_id: str, data_type: str, record: str, by_number: bool, as_json: bool) -> None:
    """Every sync of one record (by Moment id, or --number), newest first: when, outcome, the
    try, which fields changed, the error. Kept MSB1_HISTORY_DAYS after its last sync."""
    rt = load_runtime()
    [integration] = pick(rt, integration_id)
    if by_number:
        found = rt.history.by_number(integration.id, data_type, record)
        if found is None:
            raise click.ClickException(
                f"no {data_type} number {plain(record, 40)} synced for {integration.id} in the last "
                f"{rt.settings.history_days:g} days (a number that is not a valid one of its kind is not kept: "
                "use the Moment id)")
        record_id = found
    elif record.isascii() and record.isdigit():
        record_id = int(record)
    else:
        raise click.BadParameter(f"{plain(record, 40)} is not a Moment id (a number: --number)",
                                 param_hint="MOMENT_ID")
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
        line = f"  {when(e['at'])}  {e['outcome']:<15} try {e.get('attempt', 1)}"
        if e.get("changed"):
            line += f"  changed: {', '.join(e['changed'])}"
        if e.get("error"):
            line += f"  error: {plain(e['error'], 300)}"
        click.echo(line)


def find_dead_letters(rt, integration_id: str | None, data_type: str | None = None, record_id: int | None = None):
    for i in pick(rt, integration_id):
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
    rt = load_runtime()
    letters = [d for _, d in find_dead_letters(rt, integration_id)]
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
                   f"last {when(d.last_failed_at)} [{d.kind}{'' if d.notified else ', not yet emailed'}]: "
                   f"{plain(d.error, 300)}")
    click.echo(f"{len(letters)} dead letter(s)")
