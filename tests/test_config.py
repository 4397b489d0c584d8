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


# Each refused entry: the change to a good one, and the one line that says why.
@pytest.mark.parametrize("change,expected", [
    ({"bank": "sparebank-x"}, "integration 'acme', field 'bank': unknown bank 'sparebank-x'; valid names: gudbrandsdal,"),
    ({"company_key": "not-a-guid"}, "integration 'acme', field 'company_key': must be a GUID"),
    ({"notify_email": "nobody"}, "integration 'acme', field 'notify_email': is not an email address"),
    ({"notify_email": "regnskap@acme.no\r\nBcc: evil@attacker.example"},
     "integration 'acme', field 'notify_email': must not contain line breaks or other control characters"),
    ({"notify_email": "regnskap@acme.no\u202e"}, "field 'notify_email': must not contain line breaks"),
    ({"data_types": ["customers", "expenses"]}, "field 'data_types': 1: unknown data type 'expenses'; choose from customers, projects, invoices"),
    ({"data_types": []}, "field 'data_types'"),
    ({"bank": None}, "integration 'acme', field 'bank': give either bank or sb1_base_url"),
    ({"sb1_base_url": "https://regnskap.smn.no"}, "integration 'acme', field 'sb1_base_url': give bank or sb1_base_url, not both"),
    ({"surprise": 1}, "field 'surprise': Unknown field."),
    ({"id": "Has Spaces"}, "integration 'Has Spaces', field 'id': must be 1 to 63 lower-case letters, digits, - or _"),
    ({"id": "acme\n"}, "integration 'acme\\n', field 'id': must be 1 to 63 lower-case letters"),
    ({"id": "-acme"}, "field 'id': must be 1 to 63 lower-case letters"),
    ({"id": "a" * 64}, "field 'id': must be 1 to 63 lower-case letters"),
    ({"moment_company": "../acme"}, "integration 'acme', field 'moment_company': must be Moment's company code: "
                                    "1 to 63 letters, digits, - or _"),
    ({"moment_company": "acme/x"}, "field 'moment_company': must be Moment's company code"),
    ({"moment_company": "acme.no"}, "field 'moment_company': must be Moment's company code"),
    ({"moment_company": "ac me"}, "field 'moment_company': must be Moment's company code"),
    ({"moment_company": "acme\n"}, "field 'moment_company': must be Moment's company code"),
    ({"moment_company": ""}, "field 'moment_company': must be Moment's company code"),
    ({"moment_base_url": "http://app.moment.team"},
     "integration 'acme', field 'moment_base_url': must be https:// (plain http:// only to 127.0.0.1, ::1, localhost "
     "or a host in MSB1_INSECURE_HTTP_HOSTS): the credentials sent there would travel in clear"),
    ({"moment_base_url": "ftp://app.moment.team"}, "field 'moment_base_url': must be an https:// address"),
    ({"moment_base_url": "https://user:pw@app.moment.team"}, "field 'moment_base_url': must not hold a user name or password"),
    ({"moment_base_url": "https://app.moment.team/?x=1"}, "field 'moment_base_url': must not have a query"),
    ({"moment_base_url": "https://app.moment.team\n"}, "field 'moment_base_url': must not contain spaces, line breaks"),
    ({"moment_base_url": "not a url"}, "field 'moment_base_url': must not contain spaces"),
    ({"moment_base_url": "https://"}, "field 'moment_base_url': must be an https:// address"),
    ({"bank": None, "sb1_base_url": "http://regnskap.smn.no"}, "integration 'acme', field 'sb1_base_url': must be https://"),
    ({"bank": None, "sb1_base_url": "http://10.0.0.5:8082"}, "field 'sb1_base_url': must be https://"),
    ({"webhook_secret": "short"}, "integration 'acme', field 'webhook_secret': must be at least 16 characters"),
    ({"moment_api_key": "key-123\r\n"}, "integration 'acme', field 'moment_api_key': must not contain line breaks or "
                                         "other control characters"),
    ({"webhook_secret": "0123456789abcdef/x"}, "field 'webhook_secret': must not contain spaces, control characters, '/'"),
    ({"webhook_secret": "0123456789abcdef\n"}, "field 'webhook_secret': must not contain spaces"),
    ({"vat_codes": ["3\n"]}, "field 'vat_codes': 0: must be a VAT code such as 3 or 31"),
    ({"sb1_rate_limit": -1}, "field 'sb1_rate_limit': Must be greater than or equal to 0 and less than or equal to 10000."),
    ({"moment_rate_limit": float("inf")}, "field 'moment_rate_limit': Special numeric values (nan or infinity) are not permitted."),
    ({"moment_rate_limit": float("nan")}, "field 'moment_rate_limit': Special numeric values"),
    ({"moment_rate_limit": "5"}, "field 'moment_rate_limit': Not a valid number."),
    ({"sb1_rate_limit": "inf"}, "field 'sb1_rate_limit': Not a valid number."),
    # a key or an address copied with a space: refused, not sent as it is on every call
    ({"moment_api_key": "key-123 "}, "integration 'acme', field 'moment_api_key': must not start or end with a space"),
    ({"moment_api_key": " key-123"}, "field 'moment_api_key': must not start or end with a space"),
    ({"notify_email": "regnskap@acme.no "}, "field 'notify_email': must not start or end with a space"),
    ({"notify_email": " regnskap@acme.no"}, "field 'notify_email': must not start or end with a space"),
    ({"webhook_secret": "æ" * 16}, "field 'webhook_secret': must be ASCII letters, digits and punctuation only"),
    ({"moment_base_url": "https://\uff10.example"}, "field 'moment_base_url': must have a host name in ASCII"),
    ({"bank": None, "sb1_base_url": "https://regnskap.sm\u0578.no"}, "field 'sb1_base_url': must have a host name in ASCII"),
])
def test_each_refused_entry_is_one_line_naming_integration_and_field(change, expected):
    entry = {**GOOD, **change}
    for key, value in change.items():
        if value is None:
            entry.pop(key)
    with pytest.raises(IntegrationsError) as err:
        parse_integrations({"integration": [entry]}, env={"ACME_KEY": "k"})
    assert len(err.value.problems) == 1 and str(err.value) == err.value.problems[0], err.value.problems
    assert str(err.value).startswith("invalid integrations file: ") and "\n" not in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8082", "http://localhost:8082", "http://[::1]:8082",
                                 "http://127.0.0.2", "https://regnskap.example"])
def test_plain_http_only_to_this_machine(url):
    entry = {**GOOD, "sb1_base_url": url, "moment_base_url": url}
    entry.pop("bank")
    [i] = parse_integrations({"integration": [entry]}, env={"ACME_KEY": "k"}).values()
    assert i.sb1_base_url == url and i.moment_base_url == url


def test_plain_http_to_a_host_the_operator_names():
    """compose's sandbox profile speaks plain http to the sandbox service, and says so."""
    entry = {**GOOD, "moment_base_url": "http://sandbox:8081"}
    with pytest.raises(IntegrationsError, match="field 'moment_base_url': must be https://"):
        parse_integrations({"integration": [entry]}, env={"ACME_KEY": "k"})
    [i] = parse_integrations({"integration": [entry]}, env={"ACME_KEY": "k", "MSB1_INSECURE_HTTP_HOSTS": "sandbox"}).values()
    assert i.moment_base_url == "http://sandbox:8081"


@pytest.mark.parametrize("second,expected", [
    ({"company_key": GOOD["company_key"].upper()},
     "invalid integrations file: integration 'fjord', field 'company_key': the same as integration 'acme''s; "
     "each integration needs its own"),
    ({"webhook_secret": "the-same-secret-0123"},
     "invalid integrations file: integration 'fjord', field 'webhook_secret': the same as integration 'acme''s; "
     "each integration needs its own"),
    ({"moment_company": "ACME"},
     "invalid integrations file: integration 'fjord', field 'moment_company': the same as integration 'acme''s; "
     "each integration needs its own"),
])
def test_what_two_integrations_may_not_share(second, expected):
    first = {**GOOD, "webhook_secret": "the-same-secret-0123"}
    other = {**GOOD, "id": "fjord", "company_key": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
             "webhook_secret": "another-secret-01234", "moment_company": "fjord", **second}
    with pytest.raises(IntegrationsError) as err:
        parse_integrations({"integration": [first, other]}, env={"ACME_KEY": "k"})
    assert err.value.problems == [expected]
    assert "the-same-secret" not in str(err.value)


def test_two_integrations_with_their_own_keys_and_secrets_are_fine():
    first = {**GOOD, "webhook_secret": "first-secret-0123456"}
    other = {**GOOD, "id": "fjord", "company_key": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
             "webhook_secret": "second-secret-012345", "moment_company": "fjord"}
    assert set(parse_integrations({"integration": [first, other]}, env={"ACME_KEY": "k"})) == {"acme", "fjord"}


def test_all_problems_reported_at_once_and_duplicate_ids():
    bad = {**GOOD, "id": "bad", "bank": "nope", "notify_email": "x"}
    with pytest.raises(IntegrationsError) as err:
        parse_integrations({"integration": [GOOD, bad, GOOD]}, env={"ACME_KEY": "k"})
    text = str(err.value)
    assert "'bad', field 'bank'" in text and "'bad', field 'notify_email'" in text
    assert "integration 'acme': the id is used twice" in text


ENTRY = ('[[integration]]\nid = "acme"\nmoment_company = "acme"\nmoment_api_key = "k"\nbank = "smn"\n'
         'company_key = "0f8fad5b-d9cb-469f-a165-70867728950e"\nnotify_email = "a@acme.no"\ndata_types = ["customers"]\n')


# Each refused file: what it holds, and the start of the one line after "integrations file <path> ".
@pytest.mark.parametrize("content,expected", [
    (None, "does not exist (set MSB1_INTEGRATIONS_FILE)"),
    ("[[integration]\nid=", "is not valid TOML: "),
    ("", "the integrations file has no [[integration]] entries"),
    ("integration = 5", "the integrations file has no [[integration]] entries"),
    ("integration = [1]", ": integration #1: Invalid input type."),
    ("a = " + "[" * 5000 + "]" * 5000, "is not valid TOML: nested too deeply"),
    ("a = " + "{b = " * 3000 + "1" + "}" * 3000, "is not valid TOML: nested too deeply"),
    (b"\xff\xfe[[integration]]", "is not UTF-8 text (byte 0); save it as UTF-8"),
    ("# " + "x" * (1024 * 1024 + 10), "is larger than 1024 KiB; is it the right file?"),
    (ENTRY.replace('id = "acme"', 'id = "acme\\n"'), ": integration 'acme\\n', field 'id': must be 1 to 63"),
    (ENTRY.replace('bank = "smn"', 'bank = "smn"\nsb1_base_url = "https://regnskap.smn.no"'),
     ": integration 'acme', field 'sb1_base_url': give bank or sb1_base_url, not both"),
    (ENTRY + ENTRY.replace('id = "acme"', 'id = "fjord"').replace('moment_company = "acme"', 'moment_company = "fjord"'),
     ": integration 'fjord', field 'company_key': the same as integration 'acme''s; each integration needs its own"),
])
def test_each_refused_file_is_one_line_naming_it(tmp_path, content, expected):
    path = tmp_path / "integrations.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(IntegrationsError) as err:
        load_integrations(path)
    text = str(err.value)
    assert "\n" not in text and len(text) < 600, text[:600]
    if expected.startswith("the integrations file"):
        assert text == expected
    else:
        assert text.startswith(("integrations file ", "invalid integrations file ")) and str(path) in text, text
        assert text.split(str(path) + "'", 1)[1].lstrip().startswith(expected), text


def test_a_fifo_or_a_device_is_not_a_file(tmp_path):
    """Reading a FIFO would hang the worker's start; a device may never end."""
    import os
    os.mkfifo(tmp_path / "integrations.toml")
    for path in (tmp_path / "integrations.toml", "/dev/null"):
        with pytest.raises(IntegrationsError, match="is not a regular file"):
            load_integrations(path)


def test_a_directory_is_not_a_file(tmp_path):
    with pytest.raises(IntegrationsError, match="is a directory, not a file"):
        load_integrations(tmp_path)


def test_settings_from_env():
    s = Settings.from_env({"MSB1_REDIS_URL": "redis://h:1/2", "MSB1_RETRY_MAX_ATTEMPTS": "3",
                           "MSB1_RETRY_BASE_DELAY": "0.5", "MSB1_SMTP_TLS": "starttls",
                           "MSB1_SB1_IDENTITY_URL": "https://login.example/"})
    assert s.redis_url == "redis://h:1/2" and s.retry_policy.max_attempts == 3
    assert s.retry_policy.base_delay == 0.5 and s.smtp_tls == "starttls"
    assert s.token_url == "https://login.example/connect/token"
    assert Settings.from_env({"MSB1_SB1_TOKEN_URL": "https://x/t"}).token_url == "https://x/t"
    assert Settings.from_env({"MSB1_SB1_TOKEN_URL": "http://127.0.0.1:8082/t"}).token_url == "http://127.0.0.1:8082/t"


# Each refused setting: the environment, and the one line that says why (the whole line
# when it is given in full, else its start).
@pytest.mark.parametrize("env,message", [
    ({"MSB1_RETRY_MAX_DELAY": "3600"}, "MSB1_RETRY_MAX_DELAY (3600s) plus MSB1_LOCK_WAIT must stay below "
                                       "MSB1_VISIBILITY_TIMEOUT (3600s), or Redis would hand a waiting task to a second worker"),
    ({"MSB1_SMTP_TLS": "maybe"}, "MSB1_SMTP_TLS must be one of none, starttls, ssl, got 'maybe'"),
    # a number in ASCII digits only (Python would read all of these)
    ({"MSB1_SMTP_PORT": "\uff12\uff15"}, "MSB1_SMTP_PORT must be a whole number from 1 to 65535, got '２５'"),
    ({"MSB1_SMTP_PORT": "+25"}, "MSB1_SMTP_PORT must be a whole number from 1 to 65535, got '+25'"),
    ({"MSB1_CONCURRENCY": "1_000"}, "MSB1_CONCURRENCY must be a whole number from 1 to 1000"),
    ({"MSB1_CONCURRENCY": "\u0664"}, "MSB1_CONCURRENCY must be a whole number from 1 to 1000"),
    ({"MSB1_POLL_INTERVAL": "300 "}, "MSB1_POLL_INTERVAL must be a number from 1 to 86400, got '300 '"),
    ({"MSB1_POLL_INTERVAL": "3_00"}, "MSB1_POLL_INTERVAL must be a number from 1 to 86400"),
    # a credential or an address copied with a space
    ({"MSB1_SB1_CLIENT_ID": "client-1 "}, "MSB1_SB1_CLIENT_ID must not start or end with a space, got 'client-1 '"),
    ({"MSB1_SMTP_PASSWORD": " pw-123"}, "MSB1_SMTP_PASSWORD must not start or end with a space"),
    ({"MSB1_OPERATOR_EMAIL": "drift@acme.no "}, "MSB1_OPERATOR_EMAIL must not start or end with a space"),
    ({"MSB1_SMTP_PORT": "twenty-five"}, "MSB1_SMTP_PORT must be a whole number from 1 to 65535, got 'twenty-five'"),
    ({"MSB1_TASK_EVENTS": "maybe"}, "MSB1_TASK_EVENTS must be true or false, got 'maybe'"),
    ({"MSB1_RETRY_MAX_ATTEMPTS": "0"}, "MSB1_RETRY_MAX_ATTEMPTS must be a whole number from 1 to 100, got '0'"),
    ({"MSB1_LOG_FORMAT": "xml"}, "MSB1_LOG_FORMAT must be one of json, text, got 'xml'"),
    # https only (plain http to this machine, or to a host the operator names)
    ({"MSB1_SB1_TOKEN_URL": "http://login.example/connect/token"},
     "MSB1_SB1_TOKEN_URL must be https:// (plain http:// only to 127.0.0.1, ::1, localhost or a host in "
     "MSB1_INSECURE_HTTP_HOSTS): the credentials sent there would travel in clear, got 'http://login.example/connect/token'"),
    ({"MSB1_SB1_IDENTITY_URL": "http://login.regnskap.sparebank1.no"}, "MSB1_SB1_IDENTITY_URL must be https://"),
    ({"MSB1_SB1_IDENTITY_URL": "https://id:pw-123@login.example"}, "MSB1_SB1_IDENTITY_URL must not hold a user name or "
                                                                     "password, got 'https://:***@login.example'"),
    ({"MSB1_SB1_TOKEN_URL": "https://pw-123@login.example/t\n"}, "MSB1_SB1_TOKEN_URL must not contain line breaks"),
    ({"MSB1_SB1_IDENTITY_URL": "http://sandbox:8082", "MSB1_INSECURE_HTTP_HOSTS": "other"}, "MSB1_SB1_IDENTITY_URL must be https://"),
    ({"MSB1_INSECURE_HTTP_HOSTS": "*"}, "MSB1_INSECURE_HTTP_HOSTS must be host names separated by commas, got '*'"),
    # addresses in a header: no CR/LF, and an address
    ({"MSB1_SMTP_SENDER": "moment-sb1@acme.no\r\nBcc: evil@attacker.example"},
     "MSB1_SMTP_SENDER must not contain line breaks, tabs or other control characters, "
     "got 'moment-sb1@acme.no\\r\\nBcc: evil@attacker.example'"),
    ({"MSB1_SMTP_SENDER": "moment-sb1@acme.no\n"}, "MSB1_SMTP_SENDER must not contain line breaks"),
    ({"MSB1_SMTP_SENDER": "not an address"}, "MSB1_SMTP_SENDER is not an email address (a@b.no or Name <a@b.no>), "
                                             "got 'not an address'"),
    ({"MSB1_SMTP_SENDER": "Moment <nobody>"}, "MSB1_SMTP_SENDER is not an email address"),
    ({"MSB1_OPERATOR_EMAIL": "drift@acme.no\n"}, "MSB1_OPERATOR_EMAIL must not contain line breaks"),
    ({"MSB1_OPERATOR_EMAIL": "drift@acme.no\rBcc: x@y.no"}, "MSB1_OPERATOR_EMAIL must not contain line breaks"),
    ({"MSB1_OPERATOR_EMAIL": "drift"}, "MSB1_OPERATOR_EMAIL is not an email address, got 'drift'"),
    ({"MSB1_OPERATOR_EMAIL": "Drift <drift@acme.no>"}, "MSB1_OPERATOR_EMAIL is not an email address"),
    # any text: no control characters (a Windows line ending in an env file, a NUL)
    ({"MSB1_SMTP_HOST": "mail.acme.no\r"}, "MSB1_SMTP_HOST must not contain line breaks, tabs or other control "
                                           "characters, got 'mail.acme.no\\r'"),
    ({"MSB1_SB1_CLIENT_ID": "client\x00"}, "MSB1_SB1_CLIENT_ID must not contain line breaks"),
    ({"MSB1_SMTP_PASSWORD": "pw-123\n"}, "MSB1_SMTP_PASSWORD must not contain line breaks, tabs or other control characters"),
    ({"MSB1_KEY_PREFIX": "msb1 x"}, "MSB1_KEY_PREFIX must be 1 to 63 letters, digits, '_', '.', ':' or '-', got 'msb1 x'"),
    ({"MSB1_SENTRY_ENVIRONMENT": "prod/eu"}, "MSB1_SENTRY_ENVIRONMENT must be 1 to 64 characters without spaces or '/'"),
    # a DSN that parses, or none
    ({"MSB1_SENTRY_DSN": "not-a-dsn"}, "MSB1_SENTRY_DSN is not a Sentry DSN (https://<key>@<host>/<project>): "
                                       "Unsupported scheme ''"),
    ({"MSB1_SENTRY_DSN": "https://o1.ingest.sentry.io/123"}, "MSB1_SENTRY_DSN is not a Sentry DSN "
                                                             "(https://<key>@<host>/<project>): Missing public key"),
    ({"MSB1_SENTRY_DSN": "https://key123@o1.ingest.sentry.io/"}, "MSB1_SENTRY_DSN is not a Sentry DSN"),
    # numbers within bounds that make sense
    ({"MSB1_TOKEN_REFRESH_MARGIN": "999999"}, "MSB1_TOKEN_REFRESH_MARGIN must be a number from 0 to 1800, got '999999'"),
    ({"MSB1_TOKEN_REFRESH_MARGIN": "-1"}, "MSB1_TOKEN_REFRESH_MARGIN must be a number from 0 to 1800, got '-1'"),
    ({"MSB1_PENDING_TTL": "0"}, "MSB1_PENDING_TTL must be a whole number from 10 to 604800, got '0'"),
    ({"MSB1_POLL_INTERVAL": "0"}, "MSB1_POLL_INTERVAL must be a number from 1 to 86400, got '0'"),
    ({"MSB1_POLL_INTERVAL": "nan"}, "MSB1_POLL_INTERVAL must be a number from 1 to 86400, got 'nan'"),
    ({"MSB1_POLL_INTERVAL": "inf"}, "MSB1_POLL_INTERVAL must be a number from 1 to 86400, got 'inf'"),
    ({"MSB1_POLL_OVERLAP": "-5"}, "MSB1_POLL_OVERLAP must be a number from 0 to 86400, got '-5'"),
    ({"MSB1_HTTP_CONNECT_TIMEOUT": "0"}, "MSB1_HTTP_CONNECT_TIMEOUT must be a number above 0 and at most 300, got '0'"),
    ({"MSB1_HTTP_READ_TIMEOUT": "-1"}, "MSB1_HTTP_READ_TIMEOUT must be a number above 0 and at most 3600, got '-1'"),
    ({"MSB1_RETRY_BASE_DELAY": "0"}, "MSB1_RETRY_BASE_DELAY must be a number above 0 and at most 3600, got '0'"),
    ({"MSB1_RETRY_BASE_DELAY": "30", "MSB1_RETRY_MAX_DELAY": "10"},
     "MSB1_RETRY_BASE_DELAY must not be above MSB1_RETRY_MAX_DELAY (30s > 10s)"),
    ({"MSB1_LOCK_TIMEOUT": "0"}, "MSB1_LOCK_TIMEOUT must be a number from 1 to 3600, got '0'"),
    ({"MSB1_LOCK_WAIT": "-1"}, "MSB1_LOCK_WAIT must be a number from 0 to 600, got '-1'"),
    ({"MSB1_VISIBILITY_TIMEOUT": "0"}, "MSB1_VISIBILITY_TIMEOUT must be a whole number from 1 to 86400, got '0'"),
    ({"MSB1_CONCURRENCY": "100000"}, "MSB1_CONCURRENCY must be a whole number from 1 to 1000, got '100000'"),
    ({"MSB1_WEBHOOK_CHANNEL_TIMEOUT": "0"}, "MSB1_WEBHOOK_CHANNEL_TIMEOUT must be a whole number from 1 to 3600, got '0'"),
    ({"MSB1_WEBHOOK_REQUEST_TIMEOUT": "0"}, "MSB1_WEBHOOK_REQUEST_TIMEOUT must be a number from 1 to 300, got '0'"),
    ({"MSB1_WEBHOOK_CONNECTION_LIMIT": "1000000"}, "MSB1_WEBHOOK_CONNECTION_LIMIT must be a whole number from 10 to "
                                                   "65535, got '1000000'"),
    ({"MSB1_WEBHOOK_MAX_BODY": "1000000000"}, "MSB1_WEBHOOK_MAX_BODY must be a whole number from 1024 to 16777216"),
    ({"MSB1_WEBHOOK_METRICS_PORT": "70000"}, "MSB1_WEBHOOK_METRICS_PORT must be a whole number from 0 to 65535"),
    ({"MSB1_COALESCE_WINDOW": "-1"}, "MSB1_COALESCE_WINDOW must be a number from 0 to 3600, got '-1'"),
    ({"MSB1_CIRCUIT_WINDOW": "0"}, "MSB1_CIRCUIT_WINDOW must be a number above 0 and at most 86400, got '0'"),
    ({"MSB1_CIRCUIT_PROBE_INTERVAL": "0"}, "MSB1_CIRCUIT_PROBE_INTERVAL must be a number above 0 and at most 86400"),
    ({"MSB1_DIGEST_WINDOW": "-1"}, "MSB1_DIGEST_WINDOW must be a number from 0 to 86400, got '-1'"),
    ({"MSB1_HISTORY_DAYS": "100000"}, "MSB1_HISTORY_DAYS must be a number from 0 to 3650, got '100000'"),
    ({"MSB1_OUTAGE_NOTICE_AFTER": "-1"}, "MSB1_OUTAGE_NOTICE_AFTER must be a number from 0 to 2592000, got '-1'"),
    ({"MSB1_BULK_QUEUE_TARGET": "1"}, "MSB1_BULK_QUEUE_TARGET must be a whole number from 2 to 100000, got '1'"),
    ({"MSB1_SB1_RATE_LIMIT": "-1"}, "MSB1_SB1_RATE_LIMIT must be a number from 0 to 10000, got '-1'"),
    ({"MSB1_REDIS_URL": "redis+sentinel://10.0.0.1:26379"}, "MSB1_REDIS_URL: give the sentinels and the master's name"),
    ({"MSB1_REDIS_URL": "localhost:6379"}, "MSB1_REDIS_URL is not a Redis address (redis://, rediss://, unix:// or "
                                           "redis+sentinel://)"),
    ({"MSB1_REDIS_URL": "redis://:pw-123@redis:abc/0"}, "MSB1_REDIS_URL is not a Redis address (redis://, rediss://, "
                                                        "unix:// or redis+sentinel://): Port could not be cast"),
    ({"MSB1_REDIS_URL": "redis://redis:6379/zero"}, "MSB1_REDIS_URL: the database 'zero' is not a number"),
    ({"MSB1_REDIS_URL": "redis://:pw-123@red is:6379/0"}, "MSB1_REDIS_URL must not contain spaces"),
    # the integrator's credentials: one kind, not two of which one silently wins
    ({"MSB1_SB1_PRIVATE_KEY_FILE": "/k.pem", "MSB1_SB1_CLIENT_SECRET": "pw-123"},
     "MSB1_SB1_PRIVATE_KEY_FILE and MSB1_SB1_CLIENT_SECRET are set: give only one of MSB1_SB1_PRIVATE_KEY_FILE, "
     "MSB1_SB1_P12_FILE, MSB1_SB1_CLIENT_SECRET (the first would silently win)"),
    ({"MSB1_SB1_PRIVATE_KEY_FILE": "/k.pem", "MSB1_SB1_P12_FILE": "/k.p12"}, "MSB1_SB1_PRIVATE_KEY_FILE and "
                                                                             "MSB1_SB1_P12_FILE are set"),
    # a credential in clear: the Sentry key and events, the mail password
    ({"MSB1_SENTRY_DSN": "http://key123@sentry.example/1"},
     "MSB1_SENTRY_DSN must be https:// (plain http:// only to 127.0.0.1, ::1, localhost or a host in "
     "MSB1_INSECURE_HTTP_HOSTS): its key and every event would travel in clear"),
    ({"MSB1_SMTP_HOST": "smtp.example.no", "MSB1_SMTP_PASSWORD": "pw-123", "MSB1_SMTP_TLS": "none"},
     "MSB1_SMTP_TLS must be starttls or ssl when MSB1_SMTP_PASSWORD is set (the password would travel in clear "
     "to 'smtp.example.no'); none only to 127.0.0.1, ::1, localhost"),
])
def test_each_refused_setting_is_one_line(env, message):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert "pw-123" not in str(err.value) and "key123" not in str(err.value)      # no secret repeated


@pytest.mark.parametrize("url", ["redis://:pw-123@redis:6379/0\n", " redis://:pw-123@redis:6379/0",
                                 "redis://user:pw-123@redis:6379/0\r", "redis://:pw/123:x@y@redis:6379/0\t",
                                 "redis+sentinel://:pw-123@a:26379,b:26379/m\n"])
def test_the_redis_password_is_not_repeated(url):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"MSB1_REDIS_URL": url})
    assert str(err.value).startswith("MSB1_REDIS_URL must not") and "pw" not in str(err.value), str(err.value)
    assert ":***@" in str(err.value)


@pytest.mark.parametrize("name", ["MSB1_SMTP_PASSWORD", "MSB1_SENTRY_DSN", "MSB1_SB1_CLIENT_SECRET", "MSB1_SB1_P12_PASSWORD"])
def test_a_refused_secret_is_not_repeated(name):
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: "s3cret-value\r\n"})
    assert "s3cret" not in str(err.value) and str(err.value).startswith(name)


@pytest.mark.parametrize("env", [
    {"MSB1_SENTRY_DSN": "http://public@127.0.0.1:9000/1"},
    {"MSB1_SENTRY_DSN": "http://public@sentry:9000/1", "MSB1_INSECURE_HTTP_HOSTS": "sentry"},
    {"MSB1_SMTP_HOST": "127.0.0.1", "MSB1_SMTP_PASSWORD": "pw", "MSB1_SMTP_TLS": "none"},
    {"MSB1_SMTP_HOST": "smtp.example.no", "MSB1_SMTP_PASSWORD": "pw", "MSB1_SMTP_TLS": "starttls"},
    {"MSB1_REDIS_URL": "rediss://:pw@redis.example:6380/2"},
    {"MSB1_REDIS_URL": "unix:///run/redis/redis.sock"},
    {"MSB1_SB1_TOKEN_URL": "http://[::1]:8082/connect/token"},
    {"MSB1_SMTP_SENDER": "Moment-integrasjon <moment-sb1@acme.no>"},
])
def test_safe_settings_are_accepted(env):
    Settings.from_env(env)


def test_the_defaults_and_the_examples_are_accepted():
    from conftest import ROOT
    Settings.from_env({})
    example = dict(line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                   if line.startswith("MSB1_"))
    Settings.from_env(example)


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
    assert out.returncode == 2 and "MSB1_RETRY_MAX_ATTEMPTS must be a whole number from 1 to 100, got 'maybe'" in out.stderr



# ---------------------------------------------------------------- the processes themselves

def _bad_file(path):
    """An integrations file with one problem: Moment's address in plain http."""
    text = path.read_text()
    path.write_text(text.replace('moment_base_url = "http://127.0.0.1:', 'moment_base_url = "http://moment.example:', 1))


def _nested_file(path):
    path.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n" + path.read_text())


def _fifo_file(path):
    """The integrations file replaced by a FIFO: reading it would hang the start."""
    import os
    path.unlink()
    os.mkfifo(path)


REFUSED_AT_START = [
    ("a fifo", _fifo_file, {}, "integrations file '{file}' is not a regular file"),
    ("a number", None, {"MSB1_CONCURRENCY": "1_0"}, "MSB1_CONCURRENCY must be a whole number from 1 to 1000, got '1_0'"),
    ("a spaced id", None, {"MSB1_SB1_CLIENT_ID": "client "}, "MSB1_SB1_CLIENT_ID must not start or end with a space"),
    ("a file", _bad_file, {}, "invalid integrations file '{file}': integration 'acme', field 'moment_base_url': "
                              "must be https:// (plain http:// only to 127.0.0.1, ::1, localhost"),
    ("a deep file", _nested_file, {}, "integrations file '{file}' is not valid TOML: nested too deeply"),
    ("a setting", None, {"MSB1_TOKEN_REFRESH_MARGIN": "999999"},
     "MSB1_TOKEN_REFRESH_MARGIN must be a number from 0 to 1800, got '999999'"),
    ("a DSN", None, {"MSB1_SENTRY_DSN": "https://o1.ingest.sentry.io/1"},
     "MSB1_SENTRY_DSN is not a Sentry DSN (https://<key>@<host>/<project>): Missing public key"),
    ("an address", None, {"MSB1_OPERATOR_EMAIL": "drift@acme.no\r\nBcc: evil@attacker.example"},
     "MSB1_OPERATOR_EMAIL must not contain line breaks"),
]


@pytest.mark.slow
@pytest.mark.parametrize("what,change_file,env,line", REFUSED_AT_START, ids=[c[0] for c in REFUSED_AT_START])
@pytest.mark.parametrize("command", ["celery", "moment-sb1"])
def test_the_worker_process_refuses_bad_configuration_in_one_line(worker_env, command, what, change_file, env, line):
    """The worker itself (as compose starts it, and as Celery's own command does) exits with
    code 2 and one line on stderr; ``check-config`` says the same line (exit code 1)."""
    from conftest import ROOT
    path = worker_env["MSB1_INTEGRATIONS_FILE"]
    if change_file:
        from pathlib import Path
        change_file(Path(path))
    env = dict(worker_env, PYTHONWARNINGS="ignore", **env)        # no warning about running as root
    argv = (["-m", "celery", "-A", "worker.app", "worker", "--pool", "threads"] if command == "celery"
            else ["-m", "worker.cli", "worker"])
    out = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    expected = line.format(file=path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("moment-sb1: ") and expected in lines[0], out.stderr[-2000:]
    check = subprocess.run([sys.executable, "-m", "worker.cli", "check-config"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
    said = check.stderr.strip().splitlines()
    assert check.returncode == 1 and len(said) == 1 and said[0].startswith("Error: ") and expected in said[0], said


def test_check_config_loads_the_credentials_as_the_worker_does(worker_env, tmp_path):
    from conftest import ROOT
    for change, expected in (({"MSB1_SB1_CLIENT_ID": ""}, "Error: MSB1_SB1_CLIENT_ID is not set"),
                             ({"MSB1_SB1_PRIVATE_KEY_FILE": str(tmp_path / "nope.pem")},
                              "Error: [Errno 2] No such file or directory: ")):
        out = subprocess.run([sys.executable, "-m", "worker.cli", "check-config"], cwd=ROOT,
                             env=dict(worker_env, **change), capture_output=True, text=True, timeout=60)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), out.stderr
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize("name,value", [("MSB1_SENTRY_ENVIRONMENT", "prod\u3164"),      # a Hangul filler
                                        ("MSB1_SMTP_HOST", "mail\ue000.example"),       # a private-use code point
                                        ("MSB1_OPERATOR_EMAIL", "drift\u034f@firma.no")])
def test_a_setting_with_a_character_that_shows_as_nothing_is_refused(name, value):
    """The same rule as for every text we send (schemas.text.invisible)."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_sentinel_password_with_reserved_characters_reaches_kombu_whole():
    from kombu.utils.url import url_to_parts

    from worker.config.redis_url import RedisTarget
    url = RedisTarget.parse("redis+sentinel://:p%40ss%2Fw%3Ad@h1:26379,h2:26379/m/0").broker_url()
    assert [url_to_parts(part).password for part in url.split(";")] == ["p@ss/w:d", "p@ss/w:d"]
    assert [url_to_parts(part).hostname for part in url.split(";")] == ["h1", "h2"]
