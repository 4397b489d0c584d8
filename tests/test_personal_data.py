"""One rule for personal data, its parts table-tested: a refused value is named by its shape,
a record by its Moment id unless its number is a valid one, and what leaves the process
(tracebacks, Sentry events, a vendor's request id, a dry run's bodies) carries no value."""
import json
import logging
import sys

import pytest

from clients.http import request_id_of, validation_fields
from errors import RecordInvalid
from schemas.text import named, shape
from worker.cli.repair import without_values
from worker.ops.logs import _RECORD, bind, formatter, record_context, safe_traceback
from worker.ops.sentry import WITHHELD, scrub_event

NATIONAL_ID, EMAIL, NAME = "01017012345", "ola.nordmann@example.no", "Ola Nordmann"


@pytest.mark.parametrize("value,expected", [
    ("", "empty"), (None, "empty"), ("1", "1 digit"), (NATIONAL_ID, "11 digits"), (42, "2 digits"),
    (" ", "1 space"), ("   ", "3 spaces"),
    ("a", "1 character: a letter"), ("Kari", "4 characters: letters"), ("æøå", "3 characters: letters"),
    (NAME, "12 characters: letters and a space"),
    ("923 609 016", "11 characters: digits and spaces"),
    (EMAIL, "23 characters: letters, '@' and '.'"),
    ("+47 22 33 44 55", "15 characters: digits, spaces and '+'"),
    ("P-1042", "6 characters: letters, digits and '-'"),
    ("https://x.no/a?b", "16 characters: letters, '.', '/', ':' and other symbols"),
    ("100001\n", "7 characters: digits and a line break"),
    ("1\r2", "3 characters: digits and a line break"), ("1\u2028", "2 characters: digits and a line break"),
    ("1\t2", "3 characters: digits and a tab"), ("\x00", "1 character: a NUL character"),
    ("\x07", "1 character: a control character"),
    ("x\u202e", "2 characters: letters and a bidi control character"),
    ("a\u200bb", "3 characters: letters and an invisible character"),
    ("\ud800", "1 character: an unpaired surrogate"), ("\ue000", "1 character: an unassigned or private character"),
    ("１２３", "3 characters: digits other than 0-9"), ("²", "1 character: other numerals"),
    ("e\u0301", "2 characters: letters and accents"), ("1\u00a02", "3 characters: digits and an unusual space"),
    ("€", "1 character: other symbols"), ("x" * 10_000, "10000 characters: letters"),
])
def test_shape_describes_a_value_without_showing_it(value, expected):
    assert shape(value) == expected


@pytest.mark.parametrize("value", [NATIONAL_ID, EMAIL, NAME, "Kari", "x@y.no\r\nBcc: evil@attacker.example",
                                   "923609016", "ACME AS", "Storgata 1, 0155 Oslo"])
def test_no_shape_holds_a_word_or_a_digit_run_of_the_value(value):
    described = shape(value)
    for word in value.replace("@", " ").replace(".", " ").replace(",", " ").split():
        if len(word) > 2:
            assert word not in described, (value, described)


@pytest.mark.parametrize("value,pattern,expected", [
    ("NOK", r"[A-Z]{3}", "NOK"), ("Kari", r"[A-Z]{3}", "(4 characters: letters)"), (None, r"[A-Z]{3}", "(empty)"),
    ("NOK\n", r"[A-Z]{3}", "(4 characters: letters and a line break)"), ("31", r"[0-9]{1,3}", "31"),
    (NATIONAL_ID, r"[0-9]{1,3}", "(11 digits)"),
])
def test_named_shows_a_valid_code_and_shapes_anything_else(value, pattern, expected):
    assert named(value, pattern) == expected


@pytest.mark.parametrize("headers,expected", [
    ({"X-Request-Id": "0HN8A1B2C3D4E:00000001"}, "0HN8A1B2C3D4E:00000001"),
    ({"Request-Id": "|a1b2c3.d4e5_f6-"}, None),
    ({"Request-Id": "a1b2c3.d4e5_f6-"}, "a1b2c3.d4e5_f6-"),
    ({"X-Request-Id": "f" * 64}, "f" * 64), ({"X-Request-Id": "f" * 65}, None),
    ({"X-Request-Id": EMAIL}, None), ({"X-Request-Id": NAME}, None), ({"X-Request-Id": "abc\r\ndef"}, None),
    ({"X-Request-Id": ""}, None), ({}, None),
])
def test_a_vendors_request_id_is_kept_only_when_it_looks_like_one(headers, expected):
    assert request_id_of(headers) == expected


def test_only_identifiers_are_taken_for_the_fields_a_400_names():
    body = {"_validationResults": {"Info.Name": [{"Message": f"{NAME} is taken"}], EMAIL: [], NATIONAL_ID: [],
                                   "OrgNumber": []},
            "Messages": [{"PropertyName": "Info Name", "Message": "x"}, {"PropertyName": "WebUrl", "Message": "y"}]}
    assert validation_fields(body) == ["Info.Name", "OrgNumber", "WebUrl"]


def _raised(exc: BaseException, cause: BaseException | None = None):
    try:
        try:
            if cause is not None:
                raise cause
        except BaseException as inner:
            raise exc from inner
        raise exc
    except BaseException:
        return sys.exc_info()


def test_a_traceback_names_another_librarys_exception_by_its_type_only():
    info = _raised(RecordInvalid("the customer number (23 characters: letters, '@' and '.') is not a number"),
                   ValueError(f"invalid literal for int() with base 10: '{EMAIL}'"))
    text = safe_traceback(info)
    assert EMAIL not in text and "builtins.ValueError (message withheld" in text
    assert "RecordInvalid: the customer number (23 characters" in text and text.count("Traceback") == 2
    assert "raise cause" in text                                  # the frames stay
    info = _raised(KeyError(NATIONAL_ID))
    assert NATIONAL_ID not in safe_traceback(info) and "builtins.KeyError" in safe_traceback(info)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_log_line_with_an_exception_carries_no_value(fmt):
    record = logging.LogRecord("worker.sync.task", logging.ERROR, __file__, 1, "acme customer with Moment id 7: %s",
                               ("unexpected error",), _raised(ValueError(f"bad value {NAME}")))
    line = formatter(fmt).format(record)
    assert NAME not in line and "ValueError (message withheld" in line
    if fmt == "json":
        assert json.loads(line)["error"].startswith("Traceback")


def test_sentry_events_keep_our_own_messages_and_withhold_the_rest():
    event = {"exception": {"values": [
        {"type": "ValueError", "module": None, "value": f"invalid literal: '{EMAIL}'",
         "stacktrace": {"frames": [{"function": "f", "vars": {"raw": EMAIL}}]}},
        {"type": "ProtocolError", "module": "urllib3.exceptions", "value": f"Connection aborted {NAME}"},
        {"type": "RecordInvalid", "module": "errors", "value": "the KID (11 digits) must be 2-25 digits"}]},
        "extra": {"sys.argv": ["celery"]}, "request": {"data": {"email": EMAIL}, "headers": {"Authorization": "x"}}}
    scrubbed = json.dumps(scrub_event(event))
    assert EMAIL not in scrubbed and NAME not in scrubbed and scrubbed.count(WITHHELD) == 2
    assert "the KID (11 digits) must be 2-25 digits" in scrubbed


def test_a_records_number_is_logged_only_when_it_is_a_valid_one():
    from worker.sync.context import SyncContext
    with record_context(integration="acme", data_type="customers", moment_id=7):
        ctx = SyncContext(None, None, "customers", 7)
        ctx.describe(EMAIL, name=NAME)
        assert ctx.what == "customer with Moment id 7" and ctx.number is None
        assert _RECORD.get() == {"integration": "acme", "data_type": "customers", "moment_id": 7,
                                 "number_shape": "23 characters: letters, '@' and '.'"}
        assert ctx.person["number"] == EMAIL and ctx.person["name"] == NAME       # the company's email only
        ctx.describe("100001")
        assert ctx.what == "customer 100001" and ctx.number == "100001"
        assert _RECORD.get()["number"] == "100001" and "number_shape" not in _RECORD.get()
        for data_type, number, valid in [("customers", "99999", False), ("customers", "1000011", False),
                                         ("projects", "1042", True), ("projects", "P-1042", False),
                                         ("projects", "01042", False), ("invoices", 1001, True),
                                         ("invoices", "１００１", False), ("projects", "15058500027", False),
                                         ("projects", "12345678901", True), ("invoices", 15058500027, False),
                                         ("invoices", 1017000027, False),   # 01017000027, its zero lost
                                         ("invoices", 1017000028, True)]:
            ctx = SyncContext(None, None, data_type, 7)
            ctx.describe(number)
            assert (ctx.number == str(number)) is valid and (str(number) in ctx.what) is valid, (data_type, number)
        bind(number=None)
    assert _RECORD.get() == {}


def test_a_dry_run_shows_a_body_by_its_shape():
    body = {"CustomerNumber": 100001, "OrgNumber": NATIONAL_ID, "_createguid": "0f8fad5b-d9cb-469f-a165-70867728950e",
            "Info": {"Name": NAME, "DefaultEmail": {"EmailAddress": EMAIL}}, "StartDate": "2026-09-01",
            "Lines": [{"Amount": 12.5, "FinancialDate": "2026-11-20T00:00:00+00:00", "Description": "Faktura 1"}]}
    shown = without_values(body)
    text = json.dumps(shown)
    for private in (NATIONAL_ID, NAME, EMAIL):
        assert private not in text
    assert shown["Info"]["Name"] == "(12 characters: letters and a space)" and shown["CustomerNumber"] == 100001
    assert shown["_createguid"] == body["_createguid"] and shown["StartDate"] == "2026-09-01"
    assert shown["Lines"][0]["FinancialDate"] == body["Lines"][0]["FinancialDate"]



def test_a_failure_collected_for_the_digest_is_kept_encrypted_and_mailed_in_clear(r):
    from worker.config.integrations import Integration
    from worker.config.settings import Settings
    from worker.notices.digest import Notices
    from worker.store.keys import Keys
    from worker.store.records import DeadLetter, DeadLetters
    keys, sent = Keys("msb1test"), []
    settings = Settings.from_env({"MSB1_REDIS_URL": "redis://127.0.0.1:1", "MSB1_SMTP_SENDER": "a@b.example"})
    acme = Integration(id="acme", moment_company="acme", moment_api_key=None, sb1_base_url="https://x.example",
                       company_key="k", notify_email="regnskap@acme.example", data_types=frozenset({"customers"}))

    def notices(key: bytes) -> Notices:
        return Notices(r, keys, settings, DeadLetters(r, keys), send_email=sent.append,
                       publish_digest=lambda *_: None, key=lambda: key)
    r.set(keys.notice("notice-window", "acme"), "1")            # a window is open: the failure is collected
    for record_id, key in ((7, b"k" * 32), (8, b"j" * 32)):
        letter = DeadLetter("acme", "customers", record_id, what=f"customer with Moment id {record_id}",
                            error="the customer number (23 characters: letters, '@' and '.') is not a number",
                            kind="RecordInvalid")
        notices(key).failure(acme, letter, {
            "data_type": "customers", "number": EMAIL, "record": f"kunde {NAME} (kundenummer {EMAIL})",
            "what": f"Kundenummeret '{EMAIL}' er ikke et tall.", "todo": "Endre kundenummeret.", "group": "g",
            "body": f"Hei, kunde {NAME}"})
    stored = json.dumps(r.hgetall(keys.notice("digest", "acme")))
    assert r.hlen(keys.notice("digest", "acme")) == 2 and EMAIL not in stored and NAME not in stored
    assert notices(b"k" * 32).send_digest(acme) == 2
    [msg] = sent
    body = msg.get_content()
    assert f"kunde {NAME} (kundenummer {EMAIL}): Kundenummeret '{EMAIL}' er ikke et tall." in body
    assert "kunde med Moment-id 8: En uventet feil i integrasjonen." in body     # under another key: by its id
    assert r.hlen(keys.notice("digest", "acme")) == 0


def test_a_value_the_books_hold_twice_is_named_only_when_it_is_a_number(sandbox, r, rsa_key):
    from conftest import CLIENT_ID, COMPANY_KEYS

    from clients.sb1 import Credentials, SB1Client, TokenProvider
    from errors import PermanentError
    creds = Credentials.load(CLIENT_ID, key_file=str(rsa_key[0]))
    client = SB1Client(sandbox.sb1_url, COMPANY_KEYS["acme"],
                       TokenProvider(sandbox.token_url, creds, redis_client=r, cache_key="msb1test:sb1-token"))
    for _ in range(2):
        sandbox.sb1.insert(COMPANY_KEYS["acme"], "currencycodes", {"Code": NAME})
        sandbox.sb1.insert(COMPANY_KEYS["acme"], "customers", {"CustomerNumber": 100001})
    with pytest.raises(PermanentError) as err:
        client.find_by("currencycodes", "Code", NAME, what="currency")
    assert str(err.value) == "SpareBank 1 Regnskap has 2 currencys with Code of this value; there must be only one"
    with pytest.raises(PermanentError) as err:
        client.find_by("customers", "CustomerNumber", 100001, what="customer")
    assert "has 2 customers with CustomerNumber 100001;" in str(err.value)


@pytest.mark.parametrize("text,national_id", [
    ("01017000027", True), ("01017000028", False), (NATIONAL_ID, False), ("0101700002", False),
    ("010170000270", False), ("0101700002a", False), ("０１０１７０００００２７", False),
])
def test_a_number_that_may_be_a_national_identity_number_is_told_apart(text, national_id):
    from schemas.sb1 import looks_like_national_id
    assert looks_like_national_id(text) is national_id


def test_a_number_lock_in_redis_holds_the_number_keyed_never_in_clear(r):
    """A project number may be a national identity number: the lock that serializes the
    writes to it names it by HMAC with the deployment's key, also while a sync holds it."""
    from worker.config.settings import Settings
    from worker.runtime import Runtime
    rt = Runtime(Settings.from_env({"MSB1_KEY_PREFIX": "msb1test"}), integrations={})
    rt.__dict__.update(redis=r, digest_key=b"k" * 32)
    lock = rt.number_lock("acme", "projects", "01017000027")
    assert lock.acquire(token="t")
    try:
        [key] = r.keys("msb1test:number-lock:*")
        assert "01017000027" not in key and key.startswith("msb1test:number-lock:acme:projects:")
        assert not rt.number_lock("acme", "projects", "01017000027").acquire(blocking=False)   # the same lock
        other = rt.number_lock("acme", "projects", "01017000035")
        assert other.acquire(blocking=False)
        other.release()
    finally:
        lock.release()


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_celerys_line_for_a_task_that_raised_carries_no_value(fmt, capsys):
    """Celery logs a task that raised with the exception's repr and traceback text in the
    message and in ``data``: another library's exception is named by its type only."""
    from celery.app.trace import TraceInfo

    from worker.config.settings import Settings
    from worker.ops.logs import configure_logging

    class Task:
        name = "tasks.poll.poll_integration"
        throws = ()

    class Request(dict):
        hostname, id, args, kwargs = "w@h", "t-1", ("acme", "customers"), {}

    configure_logging(Settings.from_env({"MSB1_LOG_FORMAT": fmt}), "worker")
    message = f"could not parse {NAME}"
    try:
        raise ValueError(message)
    except ValueError:
        from billiard.einfo import ExceptionInfo
        einfo = ExceptionInfo()
    TraceInfo("FAILURE", einfo.exception)._log_error(Task(), Request(), einfo)
    err = capsys.readouterr().err
    assert "raised unexpected" in err and "builtins.ValueError (message withheld" in err, err
    assert NAME not in err and "could not parse" not in err


def test_a_national_identity_number_that_lost_its_leading_zero_is_still_one():
    """An invoice number is read as an integer: 01017010170 arrives as 1017010170."""
    from schemas.sb1 import looks_like_national_id
    assert looks_like_national_id("01017010170") and looks_like_national_id("1017010170")
    assert not looks_like_national_id("1017010171") and not looks_like_national_id("101701017")
