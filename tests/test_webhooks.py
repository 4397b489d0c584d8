"""The webhook receiver over real HTTP: ``moment-sb1 webhooks`` (waitress) in a subprocess,
on the tests' private Redis; what it queued is read straight from Celery's Redis list."""
from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time

import pytest
import redis
import requests
from conftest import ROOT, free_port, wait_until

from sandbox.local import listening_on

QUEUE = "moment-sb1"                      # Celery's queue: a Redis list of JSON messages
SECRETS = {name: f"{name}-webhook-secret-0123456789" for name in ("acme", "fjord")}
CUSTOMER = {"event": "UPDATE", "customer": {"id": 62788973, "customerNumber": "100001"}}
NOTHING = "nothing may be queued on a refused webhook"


def customer(record_id: int, event: str = "UPDATE") -> dict:
    return {"event": event, "customer": {"id": record_id, "customerNumber": str(100000 + record_id % 1000)}}


# ---------------------------------------------------------------- the receiver, for real

class Receiver:
    """``python -m worker.cli webhooks`` on a free port, logging to a file."""

    def __init__(self, env: dict, log_path, port: int | None = None):
        self.env, self.log_path = env, log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Receiver":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "webhooks", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_until(lambda: self._healthy() or self.proc.poll() is not None, 20, 0.05, "the receiver to start")
        if self.proc.poll() is not None:
            raise AssertionError(f"the receiver exited ({self.proc.returncode}):\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, payload=None, *, data: bytes | str | None = None, headers=None,
             timeout: float = 10) -> requests.Response:
        if data is None:
            return self.http.post(self.url + path, json=payload, headers=headers, timeout=timeout)
        return self.http.post(self.url + path, data=data, timeout=timeout,
                              headers={"Content-Type": "application/json", **(headers or {})})

    def hook(self, integration: str, payload=None, *, secret: str | None = None, **kw) -> requests.Response:
        """POST to /webhooks/{integration}/{secret} (the integration's own secret by default)."""
        return self.post(f"/webhooks/{integration}/{secret or SECRETS[integration]}", payload, **kw)

    def stop(self) -> None:
        self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


@pytest.fixture
def start_receiver(worker_env, r, tmp_path):
    """Start receivers on the private Redis (``r`` first: it flushes Redis before they run)."""
    started: list[Receiver] = []

    def start(**env_overrides) -> Receiver:
        env = dict(worker_env, **{k: str(v) for k, v in env_overrides.items()})
        rc = Receiver(env, tmp_path / f"receiver{len(started)}.log")
        started.append(rc)
        return rc.start()

    yield start
    for rc in started:
        rc.stop()


@pytest.fixture
def receiver(start_receiver) -> Receiver:
    return start_receiver()


@pytest.fixture
def spare_redis(make_redis):
    """A second private redis-server, to be stopped and started again under a receiver."""
    return make_redis()


# ---------------------------------------------------------------- what is in the queue

def queued(client) -> list[tuple[str, list]]:
    """(task name, args) of every message in Celery's queue, oldest first."""
    out = []
    for raw in reversed(client.lrange(QUEUE, 0, -1)):        # kombu LPUSHes, workers BRPOP
        msg = json.loads(raw)
        body = msg["body"]
        if msg["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        assert kwargs == {}
        assert msg["headers"]["argsrepr"] == repr(args)          # e.g. "['acme', 62788973]"
        out.append((msg["headers"]["task"], args))
    return out


def assert_nothing_queued(client) -> None:
    assert client.llen(QUEUE) == 0, f"{NOTHING}, found {queued(client)}"


# ---------------------------------------------------------------- 1, 2: accepted and queued

def test_valid_webhook_with_secret_in_path_is_queued(receiver, r):
    resp = receiver.hook("acme", CUSTOMER)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "queued", "data_type": "customers", "id": 62788973}
    assert queued(r) == [("sync.customer", ["acme", 62788973])]


def test_valid_webhook_with_secret_in_header_is_queued(receiver, r):
    resp = receiver.post("/webhooks/acme", CUSTOMER, headers={"X-Webhook-Secret": SECRETS["acme"]})
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "queued", "data_type": "customers", "id": 62788973}
    assert queued(r) == [("sync.customer", ["acme", 62788973])]
    # and fjord's own secret on its own endpoint queues under fjord, not acme
    resp = receiver.post("/webhooks/fjord", customer(7), headers={"X-Webhook-Secret": SECRETS["fjord"]})
    assert resp.status_code == 202, resp.text
    assert queued(r) == [("sync.customer", ["acme", 62788973]), ("sync.customer", ["fjord", 7])]


def test_unknown_fields_are_ignored(receiver, r):
    payload = {"event": "CREATE_NEW", "eventId": "b1f0c7", "timestamp": "2024-05-02T10:11:12Z",
               "companyCode": "acme", "webhookVersion": 2, "changes": [{"field": "name"}],
               "customer": {"id": 4711, "customerNumber": "100002", "name": "Fjellbakeriet AS",
                            "address": {"city": "Bergen"}, "tags": ["vip"], "archived": False}}
    resp = receiver.hook("acme", payload, headers={"Content-Type": "application/json; charset=utf-8"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued"
    assert queued(r) == [("sync.customer", ["acme", 4711])]


# ---------------------------------------------------------------- 3: who may send

def test_wrong_secret_and_unknown_integration_look_the_same(receiver, r):
    wrong = receiver.hook("acme", CUSTOMER, secret="acme-webhook-secret-0123456780")
    unknown = receiver.hook("nosuch", CUSTOMER, secret=SECRETS["acme"])
    assert wrong.status_code == unknown.status_code == 404
    assert wrong.json() == unknown.json() == {"error": "not found"}
    assert wrong.content == unknown.content
    # the header form: a wrong header, and no header at all
    for headers in ({"X-Webhook-Secret": "nope"}, {}):
        resp = receiver.post("/webhooks/acme", CUSTOMER, headers=headers)
        assert resp.status_code == 404, (headers, resp.text)
        assert resp.json() == {"error": "not found"}
    assert_nothing_queued(r)
    assert "acme-webhook-secret" not in receiver.log(), "request paths carry secrets and must not be logged"


def test_a_secret_sent_where_the_id_goes_is_not_logged(receiver, r):
    """A webhook URL set up the wrong way round (/webhooks/<secret>, /webhooks/<secret>/<id>)
    puts a secret where the log names the integration claimed: it is named by its shape."""
    for path in (f"/webhooks/{SECRETS['acme']}", f"/webhooks/{SECRETS['acme']}/acme"):
        resp = receiver.post(path, CUSTOMER, headers={"X-Webhook-Secret": "nope"})
        assert resp.status_code == 404 and resp.json() == {"error": "not found"}
    wait_until(lambda: receiver.log().count("unknown integration or wrong secret") >= 2, 10,
               message="the two refusals logged")
    assert "acme-webhook-secret" not in receiver.log()
    assert "(unknown: 30 characters: letters, digits and '-')" in receiver.log()
    receiver.hook("acme", CUSTOMER, secret="acme-webhook-secret-0123456780")
    wait_until(lambda: '"claimed": "acme"' in receiver.log(), 10, message="a configured id named as it is")


def test_one_integrations_secret_is_refused_on_another_endpoint(receiver, r):
    resp = receiver.hook("fjord", CUSTOMER, secret=SECRETS["acme"])
    assert resp.status_code == 404
    assert resp.json() == {"error": "not found"}
    resp = receiver.post("/webhooks/fjord", CUSTOMER, headers={"X-Webhook-Secret": SECRETS["acme"]})
    assert resp.status_code == 404
    assert resp.json() == {"error": "not found"}
    assert_nothing_queued(r)


# ---------------------------------------------------------------- 4: bad requests

def test_malformed_json_is_refused(receiver, r):
    resp = receiver.hook("acme", data=b'{"event": "UPDATE", "customer": {"id": 1')
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith("the body is not valid JSON: ")
    resp = receiver.hook("acme", data=b"\xff\xfe not utf-8")
    assert resp.status_code == 400, resp.text
    assert "not valid JSON" in resp.json()["error"]
    resp = receiver.hook("acme", data=b"")
    assert resp.status_code == 400, resp.text
    assert "not valid JSON" in resp.json()["error"]
    assert_nothing_queued(r)


def test_deeply_nested_json_is_a_bad_request_not_a_crash(receiver, r):
    resp = receiver.hook("acme", data=b"[" * 60000)          # under the 64 KiB limit
    assert resp.status_code == 400, resp.text
    assert "not valid JSON" in resp.json()["error"]
    resp = receiver.hook("acme", data=b'{"event":"UPDATE","customer":{"id":1},"x":' + b"[" * 50000)
    assert resp.status_code == 400, resp.text
    assert "not valid JSON" in resp.json()["error"]
    assert_nothing_queued(r)
    # a crash would have logged "Exception on /webhooks/acme/<secret>": the path carries the secret
    assert SECRETS["acme"] not in receiver.log()


def test_json_that_is_not_an_object_is_refused(receiver, r):
    for body in ([CUSTOMER], [], "UPDATE", 62788973, None):
        resp = receiver.hook("acme", data=json.dumps(body))
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json() == {"error": "the body must be a JSON object"}, body
    assert_nothing_queued(r)


SHAPE_ERRORS = [
    ("no record", {"event": "UPDATE"},
     {"_schema": ["exactly one of customer, project, invoice must be given (got 0)"]}),
    ("two records", {"event": "UPDATE", "customer": {"id": 1}, "invoice": {"id": 2}},
     {"_schema": ["exactly one of customer, project, invoice must be given (got 2)"]}),
    ("id a string", {"event": "UPDATE", "customer": {"id": "abc"}},
     {"customer": {"id": ["Not a valid integer."]}}),
    ("id a numeric string", {"event": "UPDATE", "customer": {"id": "62788973"}},
     {"customer": {"id": ["Not a valid integer."]}}),
    ("id a float", {"event": "UPDATE", "customer": {"id": 1.5}},
     {"customer": {"id": ["Not a valid integer."]}}),
    ("id a boolean", {"event": "UPDATE", "customer": {"id": True}},
     {"customer": {"id": ["Not a valid integer."]}}),
    ("id 0", {"event": "UPDATE", "customer": {"id": 0}},
     {"customer": {"id": ["must be a Moment record id (a whole number from 1 up)"]}}),
    ("id negative", {"event": "UPDATE", "customer": {"id": -5}},
     {"customer": {"id": ["must be a Moment record id (a whole number from 1 up)"]}}),
    ("id too large", {"event": "UPDATE", "customer": {"id": 2**80}},
     {"customer": {"id": ["must be a Moment record id (a whole number from 1 up)"]}}),
    ("event with a trailing newline", {"event": "UPDATE\n", "customer": {"id": 5}},
     {"event": ["must be an event name such as CREATE_NEW, UPDATE or DELETE"]}),
    ("no id", {"event": "UPDATE", "customer": {"customerNumber": "100001"}},
     {"customer": {"id": ["Missing data for required field."]}}),
    ("record not an object", {"event": "UPDATE", "customer": 62788973},
     {"customer": {"_schema": ["Invalid input type."]}}),
    ("no event", {"customer": {"id": 62788973}},
     {"event": ["Missing data for required field."]}),
    ("odd event", {"event": "update; drop", "customer": {"id": 62788973}},
     {"event": ["must be an event name such as CREATE_NEW, UPDATE or DELETE"]}),
]


def test_wrong_shape_names_the_field(receiver, r):
    for case, payload, problems in SHAPE_ERRORS:
        resp = receiver.hook("acme", payload)
        assert resp.status_code == 400, (case, resp.text)
        assert resp.json() == {"error": "the body is not a Moment webhook", "problems": problems}, case
    assert_nothing_queued(r)


def test_wrong_content_type_is_refused(receiver, r):
    body = json.dumps(CUSTOMER)
    resp = receiver.hook("acme", data=body, headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415, resp.text
    assert resp.json() == {"error": "Content-Type must be application/json, not text/plain"}
    resp = receiver.hook("acme", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415, resp.text
    assert "not application/x-www-form-urlencoded" in resp.json()["error"]
    resp = receiver.hook("acme", data=body, headers={"Content-Type": ""})
    assert resp.status_code == 415, resp.text
    assert resp.json() == {"error": "Content-Type must be application/json, not missing"}
    assert_nothing_queued(r)


def test_body_over_the_limit_is_refused(start_receiver, r):
    rc = start_receiver(MSB1_WEBHOOK_MAX_BODY=1024)
    padded = dict(CUSTOMER, note="x" * 2000)
    resp = rc.hook("acme", padded)
    assert resp.status_code == 413, resp.text
    assert "exceeds max_body of 1024" in resp.text       # waitress refuses it before it is read
    assert_nothing_queued(r)
    # just under the limit still goes through
    small = dict(CUSTOMER, note="x" * (1000 - len(json.dumps(CUSTOMER))))
    resp = rc.hook("acme", small)
    assert resp.status_code == 202, resp.text
    assert queued(r) == [("sync.customer", ["acme", 62788973])]


def test_default_body_limit_is_64_kib(receiver, r):
    resp = receiver.hook("acme", dict(CUSTOMER, note="x" * 70000))
    assert resp.status_code == 413, resp.text
    assert "exceeds max_body of 65536" in resp.text
    assert_nothing_queued(r)


def test_get_is_not_allowed(receiver, r):
    resp = receiver.http.get(f"{receiver.url}/webhooks/acme/{SECRETS['acme']}", timeout=10)
    assert resp.status_code == 405, resp.text
    assert resp.json() == {"error": "use POST"} and resp.headers["Allow"] == "POST"
    resp = receiver.http.get(f"{receiver.url}/webhooks/acme", timeout=10)
    assert resp.status_code == 405, resp.text
    assert_nothing_queued(r)


# ---------------------------------------------------------------- 5, 6: ignored and coalesced

def test_data_type_not_transferred_is_acknowledged_and_ignored(receiver, r):
    project = {"event": "CREATE_NEW",
               "project": {"id": 5, "projectNumber": "1", "customer": {"id": 1, "customerNumber": "100001"}}}
    resp = receiver.hook("acme", project)
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "ignored", "reason": "this integration does not transfer projects"}
    resp = receiver.hook("acme", {"event": "UPDATE", "invoice": {"id": 9}})
    assert resp.status_code == 202, resp.text
    assert resp.json() == {"status": "ignored", "reason": "this integration does not transfer invoices"}
    assert_nothing_queued(r)


def test_a_burst_for_one_record_queues_one_sync(receiver, r):
    answers = [receiver.hook("acme", CUSTOMER) for _ in range(20)]
    assert [a.status_code for a in answers] == [202] * 20, [a.text for a in answers if a.status_code != 202]
    statuses = [a.json()["status"] for a in answers]
    assert statuses == ["queued"] + ["coalesced"] * 19
    assert all(a.json()["id"] == 62788973 for a in answers)
    assert queued(r) == [("sync.customer", ["acme", 62788973])]
    # another record, or the same id at another integration, is not folded into it
    assert receiver.hook("acme", customer(62788974)).json()["status"] == "queued"
    assert receiver.hook("fjord", CUSTOMER).json()["status"] == "queued"
    assert queued(r) == [("sync.customer", ["acme", 62788973]), ("sync.customer", ["acme", 62788974]),
                         ("sync.customer", ["fjord", 62788973])]


# ---------------------------------------------------------------- 7: Redis away

def test_redis_down_answers_503_quickly_and_recovers(start_receiver, spare_redis, r):
    rc = start_receiver(MSB1_REDIS_URL=spare_redis.url)
    spare = redis.Redis.from_url(spare_redis.url, decode_responses=True)
    try:
        resp = rc.hook("acme", customer(1))
        assert resp.status_code == 202, resp.text
        assert queued(spare) == [("sync.customer", ["acme", 1])]
    finally:
        spare.close()

    spare_redis.stop()
    for record_id in (2, 3):           # the broken connection, then a fresh attempt
        t0 = time.perf_counter()
        resp = rc.hook("acme", customer(record_id), timeout=15)
        elapsed = time.perf_counter() - t0
        assert resp.status_code == 503, resp.text
        assert resp.headers.get("Retry-After") == "5"
        assert resp.json() == {"error": "the queue is not available; send the webhook again later"}
        assert elapsed < 3, f"the receiver took {elapsed:.2f}s to say Redis is away"
    resp = rc.http.get(f"{rc.url}/healthz", timeout=15)
    assert resp.status_code == 503
    assert resp.json() == {"error": "redis unavailable"}

    spare_redis.start()                # same port, empty: the receiver must reconnect
    resp = rc.hook("acme", customer(2), timeout=15)
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "queued"
    spare = redis.Redis.from_url(spare_redis.url, decode_responses=True)
    try:
        assert queued(spare) == [("sync.customer", ["acme", 2])]
    finally:
        spare.close()
    assert_nothing_queued(r)           # the suite's Redis was never involved


# ---------------------------------------------------------------- 8: speed

def test_two_hundred_webhooks_in_a_row_are_each_answered_and_queued(receiver, r):
    """Each answered 202 without waiting on anything (no timeout, no retry), each queued once.
    How fast they are answered is a benchmark figure (``bench.webhooks``), not an assertion:
    a busy machine would make any bound here flaky."""
    codes = [receiver.hook("acme", customer(1000 + i), timeout=5).status_code for i in range(200)]
    assert codes == [202] * 200
    assert r.llen(QUEUE) == 200


# ---------------------------------------------------------------- slow and greedy clients

def _slow_client(port: int, stop, opened: list) -> None:
    """Slowloris: a request whose headers never end, one byte every second."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    opened.append(sock)
    try:
        sock.sendall(b"POST /webhooks/acme/" + SECRETS["acme"].encode() + b" HTTP/1.1\r\nHost: x\r\n")
        while not stop.wait(1.0):
            sock.sendall(b"X")
    except OSError:
        pass


def test_200_slow_clients_do_not_hold_up_valid_webhooks(receiver, r):
    """200 sockets trickle headers; webhooks sent meanwhile are answered at once, none held up
    (waitress reads headers without a thread; a request takes a thread only once whole). A
    held-up webhook would wait for a slow client's channel to time out (minutes)."""
    import threading
    stop, opened = threading.Event(), []
    slow = [threading.Thread(target=_slow_client, args=(receiver.port, stop, opened), daemon=True) for _ in range(200)]
    for t in slow:
        t.start()
    wait_until(lambda: len(opened) == 200, 20, message="200 slow connections")
    time.sleep(2)
    times, codes = [], []
    started = time.monotonic()
    try:
        i = 0
        while time.monotonic() - started < 10:         # while the slow clients hold on
            t0 = time.perf_counter()
            codes.append(receiver.hook("acme", customer(i + 1)).status_code)
            times.append(time.perf_counter() - t0)
            i += 1
            time.sleep(0.1)
    finally:
        stop.set()
        for sock in opened:
            sock.close()
    assert set(codes) == {202} and len(codes) >= 50, codes[:10]
    assert max(times) < 5, f"a webhook waited {max(times):.1f}s behind the slow clients"


def test_a_silent_connection_is_closed_after_the_channel_timeout(start_receiver, r):
    rc = start_receiver(MSB1_WEBHOOK_CHANNEL_TIMEOUT=2)
    sock = socket.create_connection(("127.0.0.1", rc.port), timeout=10)
    t0 = time.monotonic()
    try:
        assert sock.recv(1) == b""                      # the server closed it
    finally:
        sock.close()
    assert time.monotonic() - t0 < 8


def send_until_answered(port: int, head: bytes, piece: bytes, seconds: float = 10) -> tuple[bytes, int]:
    """Send ``head``, then ``piece`` after ``piece`` until the server answers (or closes,
    or ``seconds`` pass); returns the answer's head and how many body bytes were sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0
    try:
        sock.sendall(head)
        sock.settimeout(0.05)
        answer = b""
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and b"\r\n\r\n" not in answer:
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                pass
            if b"\r\n\r\n" in answer:
                break
            try:
                sock.sendall(piece)
                sent += len(piece)
            except TimeoutError:
                pass
            except OSError:
                break                                   # closed by the server
        sock.settimeout(5)
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    finally:
        sock.close()
    return answer, sent


def test_a_200_mb_body_is_refused_without_being_read(receiver, r):
    answer, sent = send_until_answered(
        receiver.port, b"POST /webhooks/acme/" + SECRETS["acme"].encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 200000000\r\n\r\n", b"x" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 20_000_000, f"{sent} bytes sent before the answer"
    assert_nothing_queued(r)


def test_a_chunked_body_past_the_limit_is_refused(receiver, r):
    """A body without a length, sent in chunks, is refused with 413 once past 64 KiB (not
    read to its end, and not a dropped connection)."""
    chunk = b"x" * 65536
    answer, sent = send_until_answered(
        receiver.port, b"POST /webhooks/acme/" + SECRETS["acme"].encode() + b" HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"%x\r\n" % len(chunk) + chunk + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 20_000_000, f"{sent} bytes sent before the answer"
    assert_nothing_queued(r)
    assert receiver.hook("acme", CUSTOMER).status_code == 202      # and it goes on


def test_past_the_connection_limit_a_webhook_waits_for_an_idle_slot_to_be_cut(start_receiver, r):
    """One connection more than the limit: the receiver stops accepting until the channel
    timeout cuts an idle one; the webhook then goes through (it is delayed, not refused)."""
    rc = start_receiver(MSB1_WEBHOOK_CONNECTION_LIMIT=10, MSB1_WEBHOOK_CHANNEL_TIMEOUT=2)
    idle = [socket.create_connection(("127.0.0.1", rc.port), timeout=10) for _ in range(10)]
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        resp = requests.post(f"{rc.url}/webhooks/acme/{SECRETS['acme']}", json=CUSTOMER, timeout=20)
        waited = time.monotonic() - t0
        assert resp.status_code == 202, resp.text
        assert 1.0 < waited < 10, f"answered after {waited:.1f}s"     # held back, then let in
    finally:
        for sock in idle:
            sock.close()
    assert queued(r) == [("sync.customer", ["acme", 62788973])]


# ---------------------------------------------------------------- dripping clients

class Drippers:
    """``count`` clients that each send a webhook's request one byte every ``every`` seconds,
    never finishing it; one cut off connects again at once, as an attacker would. One thread
    keeps them all (non-blocking sockets), so hundreds are cheap."""

    HEAD = b"POST /webhooks/acme/" + SECRETS["acme"].encode() + b" HTTP/1.1\r\nHost: x\r\nX-Drip: "

    def __init__(self, port: int, count: int, every: float = 0.5):
        import threading
        self.port, self.count, self.every = port, count, every
        self.cut = 0                            # connections the server closed
        self.stop = threading.Event()
        self.socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        sock.send(self.HEAD[:10])
        return sock

    def _closed(self, sock: socket.socket) -> bool:
        try:
            sock.send(b"x")
        except BlockingIOError:
            return False
        except OSError:
            return True
        try:
            return sock.recv(1024) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _run(self) -> None:
        self.socks = [self._connect() for _ in range(self.count)]
        while not self.stop.wait(self.every):
            for i, sock in enumerate(self.socks):
                if self._closed(sock):
                    self.cut += 1
                    sock.close()
                    try:
                        self.socks[i] = self._connect()
                    except OSError:
                        pass

    def __enter__(self) -> "Drippers":
        self.thread.start()
        wait_until(lambda: len(self.socks) == self.count, 60, message=f"{self.count} dripping connections")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)
        for sock in self.socks:
            sock.close()


def webhooks_while(rc: "Receiver", seconds: float, timeout: float) -> list[tuple[int, float]]:
    """Valid webhooks one after another for ``seconds``: (status, seconds to the answer)."""
    answers, started, i = [], time.monotonic(), 0
    while time.monotonic() - started < seconds:
        i += 1
        t0 = time.monotonic()
        try:
            status = requests.post(f"{rc.url}/webhooks/acme/{SECRETS['acme']}", json=customer(i), timeout=timeout).status_code
        except requests.RequestException:
            status = 0
        answers.append((status, time.monotonic() - t0))
    return answers


@pytest.mark.slow
def test_dripping_clients_beyond_the_connection_limit_are_cut_and_webhooks_answered(start_receiver, r):
    """20 clients drip a request a byte every half second, against a limit of 10 connections:
    never silent, so the channel timeout never cuts them; each request is cut once it has
    taken longer than MSB1_WEBHOOK_REQUEST_TIMEOUT, and valid webhooks, held back until
    a slot frees, are answered within a few request timeouts."""
    metrics_port = free_port()
    rc = start_receiver(MSB1_WEBHOOK_CONNECTION_LIMIT=10, MSB1_WEBHOOK_REQUEST_TIMEOUT=2,
                        MSB1_WEBHOOK_METRICS_PORT=metrics_port)
    with Drippers(rc.port, 20) as drip:
        time.sleep(1)
        answers = webhooks_while(rc, 12, timeout=30)
        cut = drip.cut
    statuses = [status for status, _ in answers]
    assert statuses and set(statuses) == {202}, answers
    assert max(took for _, took in answers) < 3 * (2 + 1) + 2, answers     # a few request timeouts, not never
    assert cut >= 20, f"only {cut} dripping connections cut"
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'msb1_webhooks_total{decision="too-slow",integration="unknown"}' in text
    assert len(queued(r)) == len(answers)


@pytest.mark.slow
def test_600_dripping_clients_at_the_default_limits(receiver, r):
    """The issue's probe: 600 sockets drip a byte a second (more than the 500 connections
    kept) while valid webhooks are sent; each is answered, within about two request timeouts
    (10 s each)."""
    with Drippers(receiver.port, 600, every=1.0) as drip:
        time.sleep(2)
        answers = webhooks_while(receiver, 25, timeout=60)
        cut = drip.cut
    assert answers and {status for status, _ in answers} == {202}, answers
    assert max(took for _, took in answers) < 2 * (10 + 1) + 5, answers
    assert cut >= 500, cut


# ---------------------------------------------------------------- where it listens, and its figures

def test_the_receiver_and_its_figures_listen_on_this_machine_and_apart(worker_env, r, tmp_path):
    """Without --host the receiver listens on 127.0.0.1 only, and its figures (which name every
    integration) on a port of their own; on the webhook port /metrics is a 404 like any
    unknown path, so it says nothing a wrong secret would not."""
    port, metrics_port = free_port(), free_port()
    env = dict(worker_env, MSB1_WEBHOOK_METRICS_PORT=str(metrics_port))
    proc = subprocess.Popen([sys.executable, "-m", "worker.cli", "webhooks", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=open(tmp_path / "receiver.log", "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: listening_on(port) and listening_on(metrics_port) or proc.poll() is not None, 30,
                   message="the receiver and its metrics")
        assert listening_on(port) == {"127.0.0.1"} and listening_on(metrics_port) == {"127.0.0.1"}
        url = f"http://127.0.0.1:{port}"
        assert requests.post(f"{url}/webhooks/acme/{SECRETS['acme']}", json=CUSTOMER, timeout=10).status_code == 202
        public = requests.get(f"{url}/metrics", timeout=10)
        unknown = requests.get(f"{url}/no-such-page", timeout=10)
        assert (public.status_code, public.json()) == (unknown.status_code, unknown.json()) == (404, {"error": "not found"})
        assert "fjord" not in public.text
        figures = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'msb1_webhooks_total{decision="queued",integration="acme"} 1.0' in figures
        assert 'msb1_dead_letters{integration="fjord"}' in figures
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_figures_are_never_on_the_webhook_port(worker_env, r):
    port = free_port()
    out = subprocess.run([sys.executable, "-m", "worker.cli", "webhooks", "--port", str(port)], cwd=ROOT, timeout=60,
                         env=dict(worker_env, MSB1_WEBHOOK_METRICS_PORT=str(port)), capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == (
        f"moment-sb1: MSB1_WEBHOOK_METRICS_PORT must not be the webhook port ({port}): the figures name every "
        "integration and are never served on the public port")
