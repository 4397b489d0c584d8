"""Serve the sandbox apps on waitress (the WSGI server the webhook receiver uses)."""
from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from waitress.server import TcpWSGIServer

from .faults import Faults
from .moment import MomentStore, WebhookSender, create_moment_app
from .moment import seed_invoices as seed_invoices_
from .moment import seed_projects as seed_projects_
from .moment import seed_customers as seed_moment_customers
from .sb1 import SB1Store, create_sb1_app

log = logging.getLogger(__name__)

IDLE_TIMEOUT = 60       # seconds an idle keep-alive connection is kept open
THREADS = 128           # requests served at once: a benchmark runs 64 worker threads,
                        # and the simulated latency holds a thread for its whole length
CONNECTION_LIMIT = 1000


class _CountingServer(TcpWSGIServer):
    """waitress's TCP server, counting the connections it accepts (the keep-alive check)."""

    accepted = 0

    def handle_accept(self) -> None:
        before = len(self._map)
        super().handle_accept()
        if len(self._map) > before:
            self.accepted += 1


class ServerThread(threading.Thread):
    """One WSGI app on waitress, its event loop in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *,
                 threads: int = THREADS):
        super().__init__(name=f"sandbox-server-{host}:{port}", daemon=True)
        self.server = _CountingServer(
            app, map={}, host=host, port=port, threads=threads,
            connection_limit=CONNECTION_LIMIT, channel_timeout=IDLE_TIMEOUT,
            asyncore_use_poll=True,          # select() stops at 1024 descriptors
            expose_tracebacks=False, ident="moment-sb1-sandbox")
        self.host = host
        self.port: int = int(self.server.effective_port)
        self.url = f"http://{host}:{self.port}"

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections the server has accepted (keep-alive check)."""
        return self.server.accepted

    def run(self) -> None:
        self.server.run()

    def stop(self) -> None:
        """Stop accepting, cut open connections, wait for the thread."""
        def close_everything() -> None:  # runs in the event loop's own thread
            for dispatcher in list(self.server._map.values()):
                dispatcher.close()
        self.server.trigger.pull_trigger(close_everything)
        self.join(timeout=5)
        self.server.task_dispatcher.shutdown(timeout=1)


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
    # The stores hold every record in memory, and a full collection walks all of them with
    # the interpreter lock held: 300-400 ms at 10,000 customers per company, a stall of every
    # call in flight that the real platform does not have. Young collections (the cycles a
    # request leaves) run as usual; a full one only after 1,000 young ones (default: 10).
    gc.set_threshold(700, 10, 1000)
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
