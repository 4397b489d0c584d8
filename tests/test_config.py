"""Settings from the environment and the integrations file."""
import subprocess
import sys

import pytest

from worker.config.integrations import IntegrationsError, load_integrations, parse_integrations
from worker.config.settings import Settings, SettingsError, unknown_variables

GOOD = {
    "id": "acme", "moment_company": "acme", "moment_api_key": {"env": "ACME_KEY"}, "bank": "smn",
    "company_key": "0f8fad5b-d9cb-469f-a165-70867728950e", "notify_email": "regnskap@acme.no",
    "data_types": ["customers", "invoices"],
}


def test_valid_entry_resolves_bank_and_env_secret():
    [(iid, i)] = parse_integrations({"integration": [GOOD]}, env={"ACME_KEY": "s3cret"}).items()
    assert iid == "acme"
    assert i.sb1_base_url == "https://regnskap.smn.no"
    assert i.moment_api_key == "s3cret"
    assert i.data_types == {"customers", "invoices"}
    assert "s3cret" not in repr(i)


def test_explicit_base_url_instead_of_bank():
    entry = {**GOOD, "moment_api_key": "inline"}
    entry.pop("bank")
    entry["sb1_base_url"] = "http://127.0.0.1:8082"
    [i] = parse_integrations({"integration": [entry]}).values()
    assert i.sb1_base_url == "http://127.0.0.1:8082" and i.bank is None


@pytest.mark.parametrize("change,expected", [
    ({"bank": "sparebank-x"}, "integration 'acme', field 'bank': unknown bank 'sparebank-x'; valid names: gudbrandsdal,"),
    ({"company_key": "not-a-guid"}, "integration 'acme', field 'company_key': must be a GUID"),
    ({"notify_email": "nobody"}, "integration 'acme', field 'notify_email': Not a valid email address."),
    ({"data_types": ["customers", "expenses"]}, "field 'data_types': 1: unknown data type 'expenses'; choose from customers, projects, invoices"),
    ({"data_types": []}, "field 'data_types'"),
    ({"moment_api_key": {"env": "MISSING_VAR"}}, "field 'moment_api_key': environment variable MISSING_VAR is not set"),
    ({"bank": None}, "field 'bank'"),
    ({"surprise": 1}, "field 'surprise': Unknown field."),
    ({"id": "Has Spaces"}, "field 'id': must be lower-case letters"),
])
def test_each_error_names_integration_and_field(change, expected):
    entry = {**GOOD, **change}
    if change.get("bank", "x") is None:
        entry.pop("bank")
    with pytest.raises(IntegrationsError) as err:
        parse_integrations({"integration": [entry]}, env={"ACME_KEY": "k"})
    assert expected in str(err.value)


def test_all_problems_reported_at_once_and_duplicate_ids():
    bad = {**GOOD, "id": "bad", "bank": "nope", "notify_email": "x"}
    with pytest.raises(IntegrationsError) as err:
        parse_integrations({"integration": [GOOD, bad, GOOD]}, env={"ACME_KEY": "k"})
    text = str(err.value)
    assert "'bad', field 'bank'" in text and "'bad', field 'notify_email'" in text
    assert "integration 'acme': the id is used twice" in text


def test_file_errors(tmp_path):
    with pytest.raises(IntegrationsError, match="does not exist"):
        load_integrations(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[[integration]\nid=")
    with pytest.raises(IntegrationsError, match="not valid TOML"):
        load_integrations(tmp_path / "bad.toml")
    (tmp_path / "empty.toml").write_text("")
    with pytest.raises(IntegrationsError, match="no \\[\\[integration\\]\\] entries"):
        load_integrations(tmp_path / "empty.toml")


def test_settings_from_env():
    s = Settings.from_env({"MSB1_REDIS_URL": "redis://h:1/2", "MSB1_RETRY_MAX_ATTEMPTS": "3",
                           "MSB1_RETRY_BASE_DELAY": "0.5", "MSB1_SMTP_TLS": "starttls",
                           "MSB1_SB1_IDENTITY_URL": "https://login.example/"})
    assert s.redis_url == "redis://h:1/2" and s.retry_policy.max_attempts == 3
    assert s.retry_policy.base_delay == 0.5 and s.smtp_tls == "starttls"
    assert s.token_url == "https://login.example/connect/token"
    assert Settings.from_env({"MSB1_SB1_TOKEN_URL": "http://x/t"}).token_url == "http://x/t"


@pytest.mark.parametrize("env,message", [
    ({"MSB1_RETRY_MAX_DELAY": "3600"}, "must stay below MSB1_VISIBILITY_TIMEOUT"),
    ({"MSB1_SMTP_TLS": "maybe"}, "MSB1_SMTP_TLS must be"),
    ({"MSB1_SMTP_PORT": "twenty-five"}, "MSB1_SMTP_PORT must be a whole number from 1 to 65535, got 'twenty-five'"),
    ({"MSB1_TASK_EVENTS": "maybe"}, "MSB1_TASK_EVENTS must be true or false, got 'maybe'"),
    ({"MSB1_RETRY_MAX_ATTEMPTS": "0"}, "MSB1_RETRY_MAX_ATTEMPTS must be a whole number of at least 1"),
    ({"MSB1_LOG_FORMAT": "xml"}, "MSB1_LOG_FORMAT must be one of json, text"),
])
def test_bad_settings(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_all_problems_at_once():
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"MSB1_SMTP_PORT": "x", "MSB1_CONCURRENCY": "-1"})
    assert "MSB1_SMTP_PORT" in str(err.value) and "MSB1_CONCURRENCY" in str(err.value)


def test_unknown_variables_are_named_with_a_guess():
    found = unknown_variables({"MSB1_RETRY_MAX_ATTEMPT": "3", "MSB1_REDIS_URL": "redis://x", "MSB1_FOO": "1",
                               "OTHER": "1"})
    assert found == ["MSB1_FOO is not a setting",
                     "MSB1_RETRY_MAX_ATTEMPT is not a setting (did you mean MSB1_RETRY_MAX_ATTEMPTS?)"]


def test_secrets_not_in_settings_repr():
    s = Settings(smtp_password="pw-123", sb1_client_secret="cs-456", sentry_dsn="https://k@s/1")
    assert "pw-123" not in repr(s) and "cs-456" not in repr(s) and "k@s" not in repr(s)


def test_cli_check_config_reports_errors(tmp_path):
    path = tmp_path / "integrations.toml"
    path.write_text('[[integration]]\nid = "acme"\nmoment_company = "acme"\nmoment_api_key = "k"\n'
                    'bank = "atlantis"\ncompany_key = "0f8fad5b-d9cb-469f-a165-70867728950e"\n'
                    'notify_email = "a@acme.no"\ndata_types = ["customers"]\n')
    out = subprocess.run([sys.executable, "-m", "worker.cli", "check-config"], capture_output=True, text=True,
                         env={"MSB1_INTEGRATIONS_FILE": str(path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    assert "integration 'acme', field 'bank': unknown bank 'atlantis'" in out.stderr


def test_the_example_integrations_file_is_valid():
    from conftest import ROOT
    integrations = load_integrations(ROOT / "integrations.example.toml",
                                     env={"ACME_MOMENT_API_KEY": "k", "ACME_WEBHOOK_SECRET": "s" * 20})
    assert integrations["acme"].data_types == {"customers", "projects", "invoices"}
    assert integrations["acme"].revenue_accounts == {"HOURS": 3000, "EXPENSES": 3000, "PRODUCTS": 3000}


def test_revenue_accounts_override_and_errors():
    entry = {**GOOD, "revenue_accounts": {"hours": 3100}}
    [i] = parse_integrations({"integration": [entry]}, env={"ACME_KEY": "k"}).values()
    assert i.revenue_accounts == {"HOURS": 3100, "EXPENSES": 3000, "PRODUCTS": 3000}
    with pytest.raises(IntegrationsError, match="field 'vat_account': is no longer used: SpareBank 1 Regnskap "
                                                "books output VAT on the account of each VAT code"):
        parse_integrations({"integration": [{**GOOD, "vat_account": 2701}]}, env={"ACME_KEY": "k"})
    with pytest.raises(IntegrationsError, match="unknown product type 'travel'"):
        parse_integrations({"integration": [{**GOOD, "revenue_accounts": {"travel": 3000}}]}, env={"ACME_KEY": "k"})


def test_the_celery_app_reads_the_environment_only_when_it_is_used():
    """Importing worker.app needs no settings; a bad one is refused when the app is used."""
    import subprocess
    import sys

    from conftest import ROOT
    code = ("import worker.app as a\nprint('imported')\na.app.conf.broker_url\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "MSB1_RETRY_MAX_ATTEMPTS": "maybe"})
    assert out.stdout == "imported\n"
    assert out.returncode == 2 and "MSB1_RETRY_MAX_ATTEMPTS must be a whole number of at least 1, got 'maybe'" in out.stderr

