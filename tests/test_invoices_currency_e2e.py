"""Invoices in another currency end to end (issue 26, item 2): both amounts on every line,
NOK at Moment's rate or the platform's, the VAT the platform splits out of the NOK gross,
and only a currency the books do not know refused. The øre are worked out by hand."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from decimal import Decimal as D

import pytest
from conftest import wait_until, write_integrations
from test_invoices_e2e import ACME, REVENUE, books, new_invoice, receivable_line, send, stat, vouchers

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def invoices_selected(worker_env, sandbox, tmp_path):
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"extra": [REVENUE]}, fjord={"data_types": ("customers",)})


@pytest.fixture
def norwegian(sandbox, tmp_path):
    """The company's email in the product's default language, Norwegian (before the worker starts)."""
    write_integrations(tmp_path / "integrations.toml", sandbox, data_types=("customers", "projects", "invoices"),
                       acme={"extra": [REVENUE], "language": None}, fjord={"data_types": ("customers",)})


def item(text, net, code, kind):
    return {"itemText": text, "quantity": "1", "amountExclVat": net, "vatCode": code, "productType": kind}


# EUR at 11,4875 NOK (the rate Moment invoiced at). Per credit, gross in EUR -> NOK half up:
#   25 %: 1 234,56 + 308,64 = 1 543,20 -> 17 727,51 (VAT 3 545,502 -> 3 545,50; Moment's 308,64 EUR too)
#   15 %:    99,99 +  15,00 =   114,99 ->  1 320,95 (VAT 172,297 -> 172,30; Moment's 15,00 EUR = 172,31)
#   12 %:   480,00 +  57,60 =   537,60 ->  6 175,68 (VAT 661,68 exactly)
#    0 %:   100,40          =   100,40 ->  1 153,35 (1 153,345: half an øre, rounded up, not to even)
# receivable 26 377,49 kr = the credits' sum, one øre above Moment's gross 2 296,19 EUR at the
# rate (26 377,482625); in EUR the receivable is Moment's gross, 2 296,19.
EUR_LINES = [item("Konsulenttimer", "1234.56", "3", "HOURS"), item("Servering", "99.99", "31", "PRODUCTS"),
             item("Persontransport", "480.00", "33", "EXPENSES"), item("Reise", "100.40", "5", "EXPENSES")]
EUR_BOOKS = {1500: D("26377.49"), 3000: D("-14182.01"), 2700: D("-3545.50"), 3100: D("-1148.65"),
             2701: D("-172.30"), 3200: D("-6667.35"), 2702: D("-661.68")}
# the same in EUR, as the platform splits each line's amount in currency (its VAT to the cent)
EUR_CURRENCY = {1500: D("2296.19"), 3000: D("-1234.56"), 2700: D("-308.64"), 3100: D("-99.99"),
                2701: D("-15.00"), 3200: D("-580.40"), 2702: D("-57.60")}
# SEK at the platform's 98,52 NOK per 100 SEK (no rate on the invoice). Gross in SEK -> NOK:
#   25 %: 3 281,57 + 820,39 = 4 101,96 -> 4 041,25 (VAT 808,25; Moment's 820,39 SEK = 808,25)
#   15 %: 3 046,33 + 456,95 = 3 503,28 -> 3 451,43 (VAT 450,19; Moment's 456,95 SEK = 450,19)
#   12 %:   344,55 +  41,35 =   385,90 ->   380,19 (VAT 40,73; Moment's 41,35 SEK = 40,74: noted)
#    0 %: 3 176,08                      -> 3 129,07
# receivable 11 001,94 kr, one øre below Moment's gross 11 167,22 SEK at the rate (11 001,945144)
SEK_LINES = [item("Konsulenttimer", "3281.57", "3", "HOURS"), item("Servering", "3046.33", "31", "PRODUCTS"),
             item("Persontransport", "344.55", "33", "EXPENSES"), item("Reise", "3176.08", "5", "EXPENSES")]
SEK_BOOKS = {1500: D("11001.94"), 3000: D("-3233.00"), 2700: D("-808.25"), 3100: D("-3001.24"),
             2701: D("-450.19"), 3200: D("-3468.53"), 2702: D("-40.73")}


def foreign_invoice(sandbox, currency, lines, number=2001, **more):
    _, invoice = new_invoice(sandbox, number=number, lines=lines, project=False)
    return sandbox.moment.update("acme", "invoices", invoice["id"], {"currencyCode": currency, **more})


def currency_id(sandbox, code):
    return next(c["ID"] for c in sandbox.sb1.table(ACME, "currencycodes") if c["Code"] == code)


def in_currency(sandbox, voucher):
    numbers = {a["ID"]: a["AccountNumber"] for a in sandbox.sb1.documents(ACME, "accounts")}
    held: dict[int, D] = defaultdict(D)
    for ln in voucher["Lines"]:
        held[numbers[ln["AccountID"]]] += D(str(ln["AmountCurrency"]))
    return dict(held)


def rate_calls(sandbox):
    return sandbox.sb1.requests[("GET", "currencies")]


def test_eur_invoice_at_moments_rate_books_both_amounts(sandbox, worker, r):
    # the platform's rate that day differs: Moment's rate is the one booked
    sandbox.sb1.company(ACME).rates[("EUR", "2026-11-20")] = (D("12.0000"), D(1))
    invoice = foreign_invoice(sandbox, "EUR", EUR_LINES, exchangeRate="11.4875")
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    assert books(sandbox, voucher) == EUR_BOOKS
    assert in_currency(sandbox, voucher) == EUR_CURRENCY
    eur = currency_id(sandbox, "EUR")
    assert all(ln["CurrencyCodeID"] == eur and D(str(ln["CurrencyExchangeRate"])) == D("11.4875")
               for ln in voucher["Lines"])
    debit = receivable_line(voucher)
    assert (D(str(debit["Amount"])), D(str(debit["AmountCurrency"])), debit["InvoiceNumber"]) == (
        D("26377.49"), D("2296.19"), "2001")
    assert rate_calls(sandbox) == 0                  # Moment's rate: the platform's is not asked
    state = json.loads(r.hget("msb1test:state:acme:invoices", str(invoice["id"])))
    assert state["note"] == "VAT code 31: Moment 172,31 kr, booked 172,30 kr (-0.01, rounding per line)"


def test_sek_invoice_without_a_rate_is_booked_at_the_platforms_rate_per_100(sandbox, worker, r):
    invoice = foreign_invoice(sandbox, "SEK", SEK_LINES, number=2002)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the voucher")
    [voucher] = vouchers(sandbox)
    assert books(sandbox, voucher) == SEK_BOOKS
    debit = receivable_line(voucher)
    assert (D(str(debit["Amount"])), D(str(debit["AmountCurrency"]))) == (D("11001.94"), D("11167.22"))
    assert {D(str(ln["CurrencyExchangeRate"])) for ln in voucher["Lines"]} == {D("0.9852")}
    assert sum(in_currency(sandbox, voucher).values()) == 0 and rate_calls(sandbox) == 1
    state = json.loads(r.hget("msb1test:state:acme:invoices", str(invoice["id"])))
    assert state["note"] == "VAT code 33: Moment 40,74 kr, booked 40,73 kr (-0.01, rounding per line)"


def test_credit_note_in_eur_books_the_reverse_in_both_currencies(sandbox, worker, r):
    lines = [{**ln, "amountExclVat": f"-{ln['amountExclVat']}"} for ln in EUR_LINES]
    invoice = foreign_invoice(sandbox, "EUR", lines, number=2003, exchangeRate="11.4875")
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") == 1, 30, message="the credit note")
    [voucher] = vouchers(sandbox)
    assert books(sandbox, voucher) == {k: -v for k, v in EUR_BOOKS.items()}
    assert in_currency(sandbox, voucher) == {k: -v for k, v in EUR_CURRENCY.items()}
    assert receivable_line(voucher)["Description"] == "Kreditnota 2003 – Kontorbygg Lysaker"


@pytest.mark.parametrize("language", ["en", "nb"])
def test_a_currency_the_books_do_not_know_is_one_email_a_dead_letter_and_nothing_posted(request, sandbox, language,
                                                                                       smtp, r):
    if language == "nb":
        request.getfixturevalue("norwegian")
    request.getfixturevalue("worker")
    invoice = foreign_invoice(sandbox, "XYZ", EUR_LINES, number=2004)
    send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: len(smtp.messages) == 1, 30, message="the email")
    time.sleep(0.5)
    body = smtp.messages[0].get_content()
    assert {"nb": "Faktura 2004 er i valutaen XYZ, som SpareBank 1 Regnskap ikke kjenner. Ingenting ble bokført.",
            "en": "invoice 2004 is in currency XYZ, which SpareBank 1 Regnskap does not know; nothing was posted",
            }[language] in body
    assert len(smtp.messages) == 1 and vouchers(sandbox) == [] and sandbox.sb1.count_writes(ACME) == 0
    assert r.hexists("msb1test:dead:acme", f"invoices:{invoice['id']}")


def test_the_same_foreign_invoice_three_times_gives_one_voucher(sandbox, start_worker, r):
    start_worker(concurrency=8)
    invoice = foreign_invoice(sandbox, "SEK", SEK_LINES, number=2005)
    for _ in range(3):
        send("sync.invoice", "acme", invoice["id"])
    wait_until(lambda: stat(r, "posted") + stat(r, "already-posted") == 3, 30, message="three runs")
    assert stat(r, "posted") == 1
    [voucher] = vouchers(sandbox)
    assert books(sandbox, voucher) == SEK_BOOKS


def test_the_sandbox_answers_norges_bank_like_rates_and_refuses_a_currency_it_does_not_know(sandbox):
    from sandbox.sb1 import ApiError
    ids = {c["Code"]: c["ID"] for c in sandbox.sb1.table(ACME, "currencycodes")}

    def rate(code, to="NOK"):
        got = sandbox.sb1.exchange_rate(ACME, {"fromCurrencyCodeID": str(ids[code]), "toCurrencyCodeID": str(ids[to]),
                                               "currencyDate": "2026-11-20"})
        return got["ExchangeRate"], got["Factor"]
    assert rate("EUR") == (D("11.4875"), 1) and rate("SEK") == (D("98.52"), 100) and rate("NOK") == (1, 1)
    with pytest.raises(ApiError) as err:
        sandbox.sb1.exchange_rate(ACME, {"fromCurrencyCodeID": "999999", "toCurrencyCodeID": str(ids["NOK"])})
    assert err.value.status == 400
    # a voucher line in a currency the books do not have is refused as the platform does (500)
    with pytest.raises(ApiError) as err:
        account = sandbox.sb1.documents(ACME, "accounts")[0]["ID"]
        sandbox.sb1.book_journal_entries(ACME, [{"DraftLines": [{"AccountID": account, "Amount": 0, "AmountCurrency": 0,
                                                                 "CurrencyCodeID": 999999,
                                                                 "FinancialDate": "2026-11-20"}]}])
    assert err.value.status == 500 and vouchers(sandbox) == []
