"""Serve the sandbox apps on local threaded HTTP/1.1 (keep-alive) servers."""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .faults import Faults
from .moment import MomentStore, WebhookSender, create_moment_app
from .moment import seed_invoices as seed_invoices_
from .moment import seed_projects as seed_projects_
from .moment import seed_customers as seed_moment_customers
from .sb1 import SB1Store, create_sb1_app

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 60.0  # seconds an idle keep-alive connection is kept open


class _BoundedInput:
    """The request body: reads at most Content-Length bytes, so the rest can be drained."""

    def __init__(self, stream: Any, length: int):
        self._stream = stream
        self.remaining = length

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._stream.read(size)
        self.remaining -= len(data)
        if not data:
            self.remaining = 0
        return data

    def readline(self, size: int = -1) -> bytes:
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._stream.readline(size) if size > 0 else b""
        self.remaining -= len(data)
        return data

    def drain(self) -> None:
        while self.read(65536):
            pass


class KeepAliveRequestHandler(WSGIRequestHandler):
    """HTTP/1.1 with keep-alive, no per-request log lines.

    Werkzeug's own handler closes every connection; this one buffers each (small)
    response, always sends Content-Length and drains the unread request body.
    """

    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    def setup(self) -> None:
        super().setup()
        # no Nagle: a response written in two parts must not wait for the client's
        # delayed ACK (40 ms), which would swamp the latency the sandbox simulates
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tracker = getattr(self.server, "connections", None)
        if tracker is not None:
            tracker.opened(self.connection)

    def finish(self) -> None:
        tracker = getattr(self.server, "connections", None)
        if tracker is not None:
            tracker.closed(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.environ = environ = self.make_environ()
        body: _BoundedInput | None = None
        if not environ.get("wsgi.input_terminated"):  # chunked input is dechunked by werkzeug
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            body = _BoundedInput(self.rfile, max(length, 0))
            environ["wsgi.input"] = body
        if self.request_version != "HTTP/1.1":
            self.close_connection = True

        started: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            started["status"], started["headers"] = status, headers
            return chunks.append

        chunks: list[bytes] = []
        try:
            result = self.server.app(environ, start_response)
            try:
                chunks.extend(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception:  # noqa: BLE001 - answer 500 and keep serving
            log.exception("sandbox: error on %s %s", self.command, self.path)
            started = {"status": "500 INTERNAL SERVER ERROR",
                       "headers": [("Content-Type", "text/plain")]}
            chunks = [b"Internal Server Error"]
            self.close_connection = True
        try:
            if body is not None:
                body.drain()
            else:
                environ["wsgi.input"].read()
        except (OSError, ValueError):
            self.close_connection = True

        data = b"".join(chunks)
        code_text, _, reason = started["status"].partition(" ")
        code = int(code_text)
        length = str(len(data))
        self.send_response(code, reason)
        for key, value in started["headers"]:
            if key.lower() == "content-length" and self.command == "HEAD":
                length = value  # the length a GET would have
            elif key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        if code >= 200 and code not in (204, 304):
            self.send_header("Content-Length", length)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log(self, type: str, message: str, *args: Any) -> None:
        if type != "info":
            log.log(logging.ERROR if type == "error" else logging.WARNING, message, *args)


class _Connections:
    """Open client sockets of one server, so that stop() can cut keep-alive connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.accepted = 0

    def opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)
            self.accepted += 1

    def closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.discard(conn)

    def close_all(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ServerThread(threading.Thread):
    """A werkzeug threaded server running ``app`` in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        super().__init__(name=f"sandbox-server-{host}:{port}", daemon=True)
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True,
                                                  request_handler=KeepAliveRequestHandler)
        self.server.connections = _Connections()  # type: ignore[attr-defined]
        self.host = host
        self.port: int = self.server.server_port
        self.url = f"http://{host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections the server has accepted (keep-alive check)."""
        return self.server.connections.accepted  # type: ignore[attr-defined]

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        """Stop accepting, cut open connections, wait for the thread."""
        self.server.shutdown()
        self.server.connections.close_all()  # type: ignore[attr-defined]
        self.server.server_close()
        self.join(timeout=5)


RunningServer = ServerThread


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> ServerThread:
    """Start ``app`` on ``host:port`` (0 = any free port) and return the running server."""
    server = ServerThread(app, host, port)
    server.start()
    return server


class Sandbox:
    """Both stand-ins (Moment and SpareBank 1 Regnskap) on free local ports.

    ``with Sandbox() as sb: ...`` or call :meth:`stop` when done.
    """

    def __init__(self, *, host: str = "127.0.0.1", moment_port: int = 0, sb1_port: int = 0,
                 seed: int | None = 0, issuer_url: str | None = None):
        self.moment = MomentStore()
        self.sb1 = SB1Store()
        self.moment_faults = Faults(seed)
        self.sb1_faults = Faults(None if seed is None else seed + 1)
        self.webhooks = WebhookSender()
        self.moment.listeners.append(self.webhooks)
        self.moment_server = serve_in_thread(create_moment_app(self.moment, self.moment_faults, self.webhooks),
                                             host, moment_port)
        try:
            self.sb1_server = serve_in_thread(
                create_sb1_app(self.sb1, self.sb1_faults, issuer_url), host, sb1_port)
        except Exception:
            self.moment_server.stop()
            raise
        self.moment_url = self.moment_server.url
        self.sb1_url = self.sb1_server.url

    @property
    def token_url(self) -> str:
        return self.sb1_url + "/connect/token"

    def moment_company_url(self, company: str) -> str:
        """Base of one company's Moment API (append ``/customers`` etc.)."""
        return f"{self.moment_url}/api/1.0/companies/{company}"

    def add_company(self, moment_company: str, moment_api_key: str, company_key: str, *,
                    name: str | None = None, seed_customers: int = 0,
                    start_number: int = 100001, seed: int = 0, seed_projects: int = 0,
                    seed_invoices: int = 0, webhook_url: str | None = None) -> list[dict[str, Any]]:
        """Register one company in both systems; seed Moment with customers (and projects
        and finalized invoices for them); return the seeded customers. With
        ``webhook_url``, Moment's webhooks for this company go there (after the seeding)."""
        self.moment.add_company(moment_company, moment_api_key)
        self.sb1.add_company(company_key, name or moment_company)
        customers = seed_moment_customers(self.moment, moment_company, seed_customers,
                                          start_number=start_number, rng_seed=seed) if seed_customers else []
        if customers and seed_projects:
            projects = seed_projects_(self.moment, moment_company, customers, seed_projects, rng_seed=seed)
        else:
            projects = []
        if customers and seed_invoices:
            seed_invoices_(self.moment, moment_company, projects, customers, seed_invoices, rng_seed=seed)
        if webhook_url:
            self.webhooks.urls[moment_company] = webhook_url
        return customers

    def add_client(self, client_id: str, public_key_pem: bytes | str | None = None,
                   client_secret: str | None = None) -> None:
        self.sb1.add_client(client_id, public_key_pem, client_secret)

    def reset_faults(self) -> None:
        self.moment_faults.reset()
        self.sb1_faults.reset()

    def stop(self) -> None:
        self.webhooks.stop()
        self.moment_server.stop()
        self.sb1_server.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_sandbox(host: str = "127.0.0.1", moment_port: int = 8081, sb1_port: int = 8082,
                companies: Iterable[dict[str, Any]] = (), seed: int = 0, latency: float = 0.0,
                clients: Iterable[dict[str, Any]] = (), issuer_url: str | None = None,
                stop_event: threading.Event | None = None) -> None:
    """Run both stand-ins in the foreground until Ctrl-C (or ``stop_event`` is set).

    ``companies``: dicts with ``moment_company``, ``moment_api_key``, ``company_key`` and
    optional ``name``, ``seed_customers`` (count), ``start_number``.
    ``clients``: dicts with ``client_id`` and ``public_key_pem`` (PEM public key or
    certificate) and/or ``client_secret``.
    """
    companies, clients = list(companies), list(clients)
    sandbox = Sandbox(host=host, moment_port=moment_port, sb1_port=sb1_port, seed=seed,
                      issuer_url=issuer_url)
    try:
        sandbox.moment_faults.latency = sandbox.sb1_faults.latency = latency
        for client in clients:
            sandbox.add_client(client["client_id"], client.get("public_key_pem"),
                               client.get("client_secret"))
        for number, company in enumerate(companies):
            sandbox.add_company(company["moment_company"], company["moment_api_key"],
                                company["company_key"], name=company.get("name"),
                                seed_customers=int(company.get("seed_customers", 0)),
                                start_number=int(company.get("start_number", 100001)),
                                seed=seed + number,
                                seed_projects=int(company.get("seed_projects", 0)),
                                seed_invoices=int(company.get("seed_invoices", 0)),
                                webhook_url=company.get("webhook_url"))
        print(f"Moment sandbox:          {sandbox.moment_url}", flush=True)
        print(f"SpareBank 1 sandbox:     {sandbox.sb1_url}", flush=True)
        print(f"  token endpoint:        {sandbox.token_url}", flush=True)
        for company in companies:
            print(f"  company {company['moment_company']}: "
                  f"{sandbox.moment_company_url(company['moment_company'])} "
                  f"<-> CompanyKey {company['company_key']}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not (stop_event and stop_event.is_set()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()


def main(argv: list[str] | None = None) -> None:
    """``moment-sb1-sandbox``: local stand-ins for Moment and SpareBank 1 Regnskap."""
    import argparse
    import json
    parser = argparse.ArgumentParser(prog="moment-sb1-sandbox", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--moment-port", type=int, default=8081)
    parser.add_argument("--sb1-port", type=int, default=8082)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every API call")
    parser.add_argument("--config", help="JSON file with the companies and the client to register")
    args = parser.parse_args(argv)
    config: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as err:
            parser.exit(1, f"moment-sb1-sandbox: cannot read {args.config}: {err}\n")
    try:
        run_sandbox(host=args.host, moment_port=args.moment_port, sb1_port=args.sb1_port,
                    companies=config.get("companies", []), clients=config.get("clients", []),
                    seed=config.get("seed", 0), latency=args.latency)
    except KeyError as err:
        parser.exit(1, f"moment-sb1-sandbox: {args.config} misses the field {err}\n")


if __name__ == "__main__":
    main()
