"""The HTTP layer (clients/http.py) against real sockets on localhost: what each way a
connection can fail turns into, that a redirect is never followed, that proxies and
NO_PROXY apply, and that threads share keep-alive connections."""
from __future__ import annotations

import http.server
import json
import socket
import threading
from contextlib import contextmanager

import pytest

from clients.http import Http, Timeouts, send
from clients.moment import MomentClient
from errors import TransientError
from sandbox.local import free_port

FAST = Timeouts(connect=1, read=0.5)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answer: tuple[int, dict, bytes] = (200, {}, b'{"ok": true}')

    def do_GET(self) -> None:
        self.server.seen.append((self.requestline, dict(self.headers)))
        status, headers, body = self.server.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64     # the default 5 drops connects when 8 threads start at once

    def __init__(self, answer=(200, {}, b'{"ok": true}')):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.seen: list[tuple[str, dict]] = []
        self.accepted = 0

    def get_request(self):
        self.accepted += 1
        return super().get_request()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def serving(answer=(200, {}, b'{"ok": true}'), tls=None):
    server = _Server(answer)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def raw_server(on_connect):
    """A listening socket whose connections ``on_connect(conn)`` handles by hand."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=on_connect, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def failure(url: str) -> TransientError:
    with pytest.raises(TransientError) as err:
        send(Http(proxies={}), "GET", url + "/api/customers/7", service="Moment", timeouts=FAST,
             params={"filter": "Name eq 'Kari Nordmann'"})
    assert "Kari" not in str(err.value)       # the query never appears in an error
    return err.value


def test_nothing_listening_is_could_not_connect():
    assert str(failure(f"http://127.0.0.1:{free_port()}")) == "Moment GET /api/customers/7: could not connect"


def test_no_answer_within_the_read_timeout_is_timed_out():
    held = []
    with raw_server(held.append) as url:          # accepts, reads nothing, says nothing
        assert str(failure(url)) == "Moment GET /api/customers/7: timed out"


@pytest.mark.parametrize("answer", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"half\":"],
                         ids=["closed-before-answering", "closed-mid-body"])
def test_a_connection_closed_mid_answer_is_a_passing_failure(answer):
    def half(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(answer)
        conn.close()
    with raw_server(half) as url:
        assert str(failure(url)) == "Moment GET /api/customers/7: the connection failed"


def test_a_redirect_is_not_followed_and_carries_no_credentials_elsewhere():
    with serving() as elsewhere, serving((302, {"Location": "PLACEHOLDER"}, b"")) as moved:
        moved.answer = (302, {"Location": f"{elsewhere.url}/steal"}, b"")
        client = MomentClient("acme", "secret-api-key", base_url=moved.url, http=Http(proxies={}), timeouts=FAST)
        with pytest.raises(TransientError, match=r"HTTP 302, a redirect .*is the base URL right\?") as err:
            client.get("customers", 7)
        assert err.value.status == 302
        assert elsewhere.seen == []
        assert len(moved.seen) == 1


def test_the_moment_key_goes_as_basic_auth_and_the_answer_is_parsed():
    with serving((200, {}, json.dumps({"id": 7, "name": "Ærlig Øl AS"}).encode())) as moment:
        client = MomentClient("acme", "k", base_url=moment.url, http=Http(proxies={}), timeouts=FAST)
        assert client.get("customers", 7) == {"id": 7, "name": "Ærlig Øl AS"}
    requestline, headers = moment.seen[0]
    assert requestline == "GET /api/1.0/companies/acme/customers/7 HTTP/1.1"
    assert headers["Authorization"] == "Basic YXBpa2V5Oms="        # apikey:k
    assert headers["User-Agent"].startswith("moment-sb1")


def test_proxies_apply_except_to_no_proxy_hosts(monkeypatch):
    monkeypatch.setenv("no_proxy", "localhost")
    monkeypatch.setenv("NO_PROXY", "localhost")
    with serving() as proxy, serving() as direct:
        http = Http(proxies={"http": proxy.url})
        port = direct.server_address[1]
        send(http, "GET", f"http://127.0.0.1:{port}/via-proxy", service="x", timeouts=FAST)
        send(http, "GET", f"http://localhost:{port}/direct", service="x", timeouts=FAST)
    assert [line for line, _ in proxy.seen] == [f"GET http://127.0.0.1:{port}/via-proxy HTTP/1.1"]
    assert [line for line, _ in direct.seen] == ["GET /direct HTTP/1.1"]


def test_threads_share_keep_alive_connections():
    with serving() as server:
        http = Http(proxies={}, pool_size=8)
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def calls() -> None:
            try:
                barrier.wait(timeout=5)
                for _ in range(25):
                    assert send(http, "GET", server.url + "/x", service="x", timeouts=FAST).json() == {"ok": True}
            except BaseException as exc:       # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=calls) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors
    assert len(server.seen) == 200
    assert server.accepted <= 8       # 200 calls on at most one connection per thread


def test_https_certificates_are_checked(tmp_path):
    """A server whose certificate no authority signed is refused, as requests would."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with serving(tls=context) as server:
        port = server.server_address[1]
        with pytest.raises(TransientError, match="the connection failed"):
            send(Http(proxies={}), "GET", f"https://127.0.0.1:{port}/x", service="x", timeouts=FAST)
        assert server.seen == []


def test_a_proxy_that_drops_the_call_is_not_retried_here():
    """The task's backoff retries, not the HTTP layer (urllib3 would try three more times)."""
    accepted = []

    def drop(conn: socket.socket) -> None:
        accepted.append(conn)
        conn.recv(65536)
        conn.close()
    with raw_server(drop) as proxy:
        with pytest.raises(TransientError):
            send(Http(proxies={"http": proxy}), "GET", "http://moment.invalid/api/x", service="x", timeouts=FAST)
    assert len(accepted) == 1
