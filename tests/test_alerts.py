"""deploy/prometheus: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules alerts_test.yml`), the compose Prometheus config passes `promtool check
config`; 50 companies in one outage make one alert; every alert has its runbook entry in
docs/operations.md and its unit test, and uses only metrics the product exports.
promtool comes from Debian's `prometheus` package (scripts/setup installs it)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT

DIR = ROOT / "deploy" / "prometheus"
RULES = DIR / "alerts.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run scripts/setup as root (Debian's prometheus package)"
    return path


def run(*args: str, cwd=DIR) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_rules_and_config_pass_promtool_check(promtool):
    out = run(promtool, "check", "rules", "alerts.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(promtool, "check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_pass_their_unit_tests(promtool):
    out = run(promtool, "test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_broken_rule_fails_its_unit_test(promtool, tmp_path):
    """The unit tests can fail: the dead-letter threshold raised, or a circuit alert per company."""
    shutil.copy(DIR / "alerts_test.yml", tmp_path)
    text = RULES.read_text()
    for broken in (text.replace(">= 5", ">= 50"),
                   text.replace("count by (service, reason) (max by (integration, service, reason)",
                                "(max by (integration, service, reason)")):
        assert broken != text
        (tmp_path / "alerts.yml").write_text(broken)
        out = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
        assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def fleet_test(companies: list[str]) -> dict:
    """50 companies, SpareBank 1 down for all of them for 20 min: their circuits open, their
    webhooks queue, their backlogs grow, nothing is written; two endpoints report it all."""
    series = [{"series": 'up{job="moment-sb1-worker",instance="w%d"}' % w, "values": "1x40"} for w in (1, 2)]
    series += [{"series": 'up{job="moment-sb1-webhooks",instance="rx"}', "values": "1x40"},
               {"series": 'msb1_redis_up{job="moment-sb1-worker",instance="w1"}', "values": "1x40"},
               {"series": 'msb1_last_poll_timestamp_seconds{job="moment-sb1-worker",instance="w1"}',
                "values": "0+60x40"}]      # beat polls every minute
    for c in companies:
        series += [
            {"series": f'msb1_webhooks_total{{job="moment-sb1-webhooks",instance="rx",integration="{c}",'
                       f'decision="queued"}}', "values": "0+1x40"},
            {"series": f'msb1_last_write_timestamp_seconds{{job="moment-sb1-worker",instance="w1",integration="{c}"}}',
             "values": "0x40"},
        ]
        for w in (1, 2):
            series += [
                {"series": f'msb1_circuit_open{{job="moment-sb1-worker",instance="w{w}",integration="{c}",'
                           f'service="sb1",reason="outage"}}', "values": "1x40"},
                {"series": f'msb1_backlog_messages{{job="moment-sb1-worker",instance="w{w}",integration="{c}"}}',
                 "values": "1+1x40"},
                {"series": f'msb1_dead_letters{{job="moment-sb1-worker",instance="w{w}",integration="{c}"}}',
                 "values": "0x40"},
            ]
    names = " ".join(sorted(companies))
    outage = {"exp_labels": {"severity": "warning", "scope": "fleet", "service": "sb1", "reason": "outage"},
              "exp_annotations": {
                  "summary": f"sb1 circuit open (outage) for {len(companies)} integration(s) over 15 min",
                  "description": f"Syncs wait (none fail for it; * = every integration) for: {names} ",
                  "runbook_url": "docs/operations.md#msb1circuitopen"}}
    checks = [{"eval_time": "40m", "alertname": a["alert"], "exp_alerts": []} for a in alerts()]
    next(c for c in checks if c["alertname"] == "MSB1CircuitOpen")["exp_alerts"] = [outage]
    return {"rule_files": [str(RULES)], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}]}


def test_fifty_companies_in_one_outage_are_one_alert(promtool, tmp_path):
    """No alert per company: one MSB1CircuitOpen naming all 50, and nothing else (no
    "no writes" for 50 companies, no dead letters)."""
    companies = [f"company{n:02d}" for n in range(50)]
    path = tmp_path / "fleet_test.yml"
    path.write_text(yaml.safe_dump(fleet_test(companies)))
    out = run(promtool, "test", "rules", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    # the same test expecting no alert fails: the outage is seen
    broken = fleet_test(companies)
    for check in broken["tests"][0]["alert_rule_test"]:
        check["exp_alerts"] = []
    path.write_text(yaml.safe_dump(broken))
    assert run(promtool, "test", "rules", str(path), cwd=tmp_path).returncode != 0


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_labels_a_runbook_entry_and_a_unit_test():
    docs = (ROOT / "docs" / "operations.md").read_text()
    anchors = {slug(line.lstrip("#")) for line in docs.splitlines() if line.startswith("#")}
    tested = yaml.safe_load((DIR / "alerts_test.yml").read_text())
    firing = {check["alertname"] for test in tested["tests"] for check in test["alert_rule_test"]
              if check["exp_alerts"]}
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["labels"]["scope"] in {"fleet", "company"}, name
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page == "docs/operations.md" and anchor == name.lower() and anchor in anchors, f"{name}: {url}"
        assert name in firing, f"{name} has no unit test that makes it fire"
        if rule["labels"]["scope"] == "company":
            assert "by (integration)" in rule["expr"], name
    # the runbook is under "Alerts"
    section = docs.split("\n## Alerts", 1)[1].split("\n## ", 1)[0]
    for name in names:
        assert f"### {name}" in section, name


def exported_metrics() -> set[str]:
    """Every msb1_* name the product exports (worker/ops/metrics.py), counters with _total."""
    source = (ROOT / "worker" / "ops" / "metrics.py").read_text()
    names = set(re.findall(r'GaugeMetricFamily\(\s*"(msb1_\w+)"', source))
    names |= {f"{n}_total" for n in re.findall(r'Counter\(\s*"(msb1_\w+)"', source)}
    for n in re.findall(r'Histogram\(\s*"(msb1_\w+)"', source):
        names |= {f"{n}_bucket", f"{n}_sum", f"{n}_count"}
    return names


def test_alerts_use_only_metrics_the_product_exports():
    exported = exported_metrics()
    assert {"msb1_redis_up", "msb1_dead_letters", "msb1_webhooks_total"} <= exported
    used = {name for rule in alerts() for name in re.findall(r"\bmsb1_\w+", rule["expr"])}
    used |= {name for rule in alerts() for text in rule["annotations"].values()
             for name in re.findall(r"\bmsb1_\w+", text)}
    assert used and used <= exported, sorted(used - exported)
