"""The operator console in a real headless browser (Debian's chromium and chromium-driver,
driven by Selenium), against a real worker, Redis and the sandbox: an operator logs in,
finds a dead letter by customer number, replays it and sees it leave; a viewer has no
replay button and a forged POST is refused; a POST without the session's token or from
another site is refused; the audit log shows the replay with who and why.

``CONSOLE_SCREENSHOT=docs/console.png`` also saves the fleet page there (the docs' picture)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import COMPANY_KEYS, ROOT, free_port, wait_until

from sandbox.moment import seed_customers
from worker.console.auth import set_user

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery staple"
SECRET = "a-test-secret-of-the-console-0123456789abcdef"


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver_path, "needs Debian's chromium and chromium-driver (scripts/setup installs them)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def console(worker_env, tmp_path):
    """The console (a subprocess, its default settings but the secret and users file); yields its URL."""
    users = tmp_path / "console-users.txt"
    set_user(str(users), "olga", "operator", PASSWORD)
    set_user(str(users), "vera", "viewer", PASSWORD)
    port = free_port()
    env = dict(worker_env, MSB1_CONSOLE_SECRET=SECRET, MSB1_CONSOLE_USERS_FILE=str(users))
    log = open(tmp_path / "console.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "console", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    # localhost: a browser sends a Secure cookie to http://localhost (the console's default is Secure)
    url = f"http://localhost:{port}"

    def up():
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.ConnectionError:
            return proc.poll() is not None
    wait_until(up, 30, message="the console")
    assert proc.poll() is None, (tmp_path / "console.log").read_text()
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


class Attacker:
    """Another site (127.0.0.1 on another port is another site than localhost): a page whose
    form posts to the console without its token, as a cross-site request would."""

    def __init__(self, target: str):
        page = (f'<form id="f" method="post" action="{target}"><input name="reason" value="gotcha"></form>'
                '<script>document.getElementById("f").submit()</script>').encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self):
        self.server.shutdown()


def log_in(driver, url: str, name: str) -> None:
    from selenium.webdriver.common.by import By
    driver.get(f"{url}/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "login").click()
    wait_until(lambda: driver.find_elements(By.ID, "whoami"), 10, message="the login")


def forge(driver, path: str, **fields) -> str:
    """Post a form the page did not offer (built in the page, so the session's cookie goes
    with it, as a forged request's would); the answer's text."""
    from selenium.webdriver.common.by import By
    old = driver.find_element(By.TAG_NAME, "html")
    driver.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "for (const [k, v] of Object.entries(arguments[1])) {"
        "  const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();", path, fields)
    wait_until(lambda: not _alive(old), 10, message="the answer")
    return driver.find_element(By.TAG_NAME, "body").text


def _alive(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException
    try:
        element.is_enabled()
        return True
    except StaleElementReferenceException:
        return False


def test_console_roles_replay_audit_and_cross_site_requests(sandbox, start_worker, worker_env, r, console, browser,
                                                            tmp_path):
    from selenium.webdriver.common.by import By

    from worker.intake.producer import enqueue
    acme = seed_customers(sandbox.moment, "acme", 4)
    [fjord_bad] = seed_customers(sandbox.moment, "fjord", 1)
    bad, other_bad = acme[1], acme[3]         # numbers 100002 and 100004: valid, so dead letters are named by them
    for company, rec in (("acme", bad), ("acme", other_bad), ("fjord", fjord_bad)):
        sandbox.moment.update(company, "customers", rec["id"], {"organizationNumber": "12345678901"})
    start_worker()
    for rec in acme:
        enqueue("acme", "customers", rec["id"])
    enqueue("fjord", "customers", fjord_bad["id"])
    wait_until(lambda: r.hlen("msb1test:dead:acme") == 2 and r.hlen("msb1test:dead:fjord") == 1, 30,
               message="three dead letters")

    # the operator: the fleet shows acme in need, with its dead letters
    log_in(browser, console, "olga")
    assert "olga (operator)" in browser.find_element(By.ID, "whoami").text
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-integration="acme"]')
    assert "dead letters" in row.text and row.get_attribute("class") == "problem"
    browser.save_screenshot(str(tmp_path / "console.png"))
    if os.environ.get("CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["CONSOLE_SCREENSHOT"])

    # ... finds the dead letter by the customer number an accountant quotes
    row.find_element(By.LINK_TEXT, "acme").click()
    wait_until(lambda: browser.find_elements(By.ID, "state"), 10, message="acme's page")
    assert "2 dead letter(s)" in browser.find_element(By.ID, "state").text
    browser.find_element(By.ID, "q").send_keys(bad["customerNumber"])
    browser.find_element(By.ID, "find").click()
    wait_until(lambda: "q=" in browser.current_url, 10, message="the search")
    [found] = browser.find_elements(By.CSS_SELECTOR, "tr[data-record]")
    assert found.get_attribute("data-record") == f"customers:{bad['id']}"
    assert f"customer {bad['customerNumber']}" in found.text
    group = browser.find_element(By.CSS_SELECTOR, "section.group")
    assert "must be nine digits" in group.text and "12345678901" not in browser.page_source   # its shape only

    # a POST without the session's token is refused, even from the console's own page
    text = forge(browser, "/company/acme/pause", reason="no token")
    assert "403" in text and "token is missing" in text, text
    # ... and so is one from another site (SameSite keeps the cookie home; the token is missing too)
    attacker = Attacker(f"{console}/company/acme/pause")
    try:
        browser.get(attacker.url)
        wait_until(lambda: browser.find_elements(By.ID, "refused"), 10, message="the console's answer")
        assert "refused" in browser.find_element(By.ID, "refused").text
    finally:
        attacker.stop()
    assert r.hlen("msb1test:paused") == 0

    # fixed in Moment, replayed from the console with a reason: it leaves the list
    sandbox.moment.update("acme", "customers", bad["id"], {"organizationNumber": "923609016"})
    browser.get(f"{console}/company/acme?q={bad['customerNumber']}")
    group = browser.find_element(By.CSS_SELECTOR, "section.group")
    group.find_element(By.NAME, "reason").send_keys("org number corrected in Moment")
    group.find_element(By.CSS_SELECTOR, "button.replay").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "p.flash"), 10, message="the replay's answer")
    assert "queued 1 replay(s)" in browser.find_element(By.CSS_SELECTOR, "p.flash").text
    wait_until(lambda: r.hlen("msb1test:dead:acme") == 1, 30, message="the replay to write the customer")
    browser.get(f"{console}/company/acme?q={bad['customerNumber']}")
    assert browser.find_elements(By.ID, "no-dead-letters")
    assert int(bad["customerNumber"]) in {c["CustomerNumber"] for c in sandbox.sb1.customers(COMPANY_KEYS["acme"])}
    assert r.hexists("msb1test:dead:acme", f"customers:{other_bad['id']}")       # the other one: not replayed

    # its history, by the number
    browser.get(f"{console}/record?integration=acme&data_type=customers&q={bad['customerNumber']}")
    outcomes = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#history tbody tr td:nth-child(2)")]
    assert outcomes[0] == "created" and "failed" in outcomes

    # the audit log: who, what and why
    browser.get(f"{console}/audit")
    first = browser.find_element(By.CSS_SELECTOR, "#audit tbody tr")
    cells = [td.text for td in first.find_elements(By.TAG_NAME, "td")]
    assert cells[1:] == ["olga", "console", "replay", "acme", f"customer {bad['customerNumber']}", "queued 1",
                         "org number corrected in Moment"]
    entries = json.loads(subprocess.run([sys.executable, "-m", "worker.cli", "audit", "--json"], env=worker_env,
                                        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout)
    assert [(e["who"], e["action"], e["why"]) for e in entries] == [("olga", "replay",
                                                                      "org number corrected in Moment")]

    # the viewer: sees fjord's dead letter, has no replay button, and a forged POST is refused
    browser.find_element(By.CSS_SELECTOR, ".whoami button").click()
    wait_until(lambda: browser.find_elements(By.ID, "login"), 10, message="the logout")
    log_in(browser, console, "vera")
    browser.get(f"{console}/company/fjord")
    assert browser.find_elements(By.CSS_SELECTOR, "tr[data-record]")
    assert browser.find_elements(By.CSS_SELECTOR, "button.replay") == []
    assert browser.find_elements(By.ID, "pause") == []
    token = browser.find_element(By.NAME, "csrf_token").get_attribute("value")       # the logout form's
    group_id = browser.find_element(By.CSS_SELECTOR, "section.group").get_attribute("id").removeprefix("group-")
    text = forge(browser, "/company/fjord/replay", csrf_token=token, group=group_id, reason="a viewer tries")
    assert "403" in text and "this needs the operator role" in text, text
    assert r.hlen("msb1test:dead:fjord") == 1 and len(entries) == 1 == r.llen("msb1test:audit")
