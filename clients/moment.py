"""Moment's REST API: ``{base}/api/1.0/companies/{companyCode}/{entity}``.

Facts marked *assumed* in the domain brief live here as constants.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator

from urllib3.util import make_headers

from errors import IntegrationError, PermanentError, TransientError

from .http import Http, Timeouts, send
from .ratelimit import Limited

DEFAULT_BASE_URL = "https://app.moment.team"
API_PREFIX = "/api/1.0/companies"
# Paging and filter parameter names (assumed, from a third-party client).
PAGE_PARAM, SIZE_PARAM, MODIFIED_FROM_PARAM = "page", "size", "lastModifiedDateFrom"
MODIFIED_FIELD = "lastModifiedDate"        # a record's version, as a listed or fetched record has it
FIRST_PAGE = 1
PAGE_SIZE = 200
PROBE_ROUTE = "customers"   # the cheapest read, to see whether Moment takes our key
# An invoice as a PDF (assumed: Moment's help pages show the PDF, not its API route)
DOCUMENT_ROUTE = "invoices/{id}/pdf"
# who answered, in errors from that route: not "Moment", so a broken PDF route opens no
# circuit (it would hold back every sync of the company) and says which route failed
DOCUMENT_SERVICE = "Moment (invoice PDF)"
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024


class MomentClient:
    service = "Moment"

    def __init__(self, company_code: str, api_key: str, *, base_url: str = DEFAULT_BASE_URL,
                 http: Http | None = None, timeouts: Timeouts = Timeouts(),
                 limits: Limited | None = None):
        self.limits = limits or Limited(None, (), self.service)
        self.base = f"{base_url.rstrip('/')}{API_PREFIX}/{company_code}"
        self.http = http or Http()
        # HTTP Basic with the user "apikey" (assumed, see the domain brief)
        self._headers = {"Authorization": make_headers(basic_auth=f"apikey:{api_key}")["authorization"],
                         "Accept": "application/json"}
        self.timeouts = timeouts

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        self.limits.before()
        try:
            resp = send(self.http, "GET", f"{self.base}/{path}", service=self.service,
                        timeouts=self.timeouts, headers=self._headers, params=params)
        except TransientError as exc:
            if exc.status == 429:
                self.limits.rate_limited(exc.retry_after)
            raise
        try:
            return resp.json()
        except ValueError:
            raise TransientError(f"{self.service} GET {path.split('/')[0]}: the answer is not JSON",
                                 service=self.service) from None

    def get(self, entity: str, record_id: int | str) -> dict[str, Any]:
        """One record as it is now. Raises ``NotFound`` when it is gone."""
        return self._get(f"{entity}/{int(record_id)}")

    def document(self, invoice_id: int) -> bytes:
        """The invoice as a PDF (``DOCUMENT_ROUTE``). Raises ``NotFound`` when Moment has none,
        ``PermanentError`` when the answer is not a PDF."""
        self.limits.before()
        path = DOCUMENT_ROUTE.format(id=int(invoice_id))
        headers = {**self._headers, "Accept": "application/pdf"}
        try:
            resp = send(self.http, "GET", f"{self.base}/{path}", service=self.service,
                        timeouts=self.timeouts, headers=headers)
        except IntegrationError as exc:
            if exc.status == 429:
                self.limits.rate_limited(getattr(exc, "retry_after", None))
            if exc.status is not None:      # the route answered: its own failure, not Moment's
                exc.service = DOCUMENT_SERVICE
            raise
        data = resp.data
        if not data.startswith(b"%PDF-") or len(data) > MAX_DOCUMENT_BYTES:
            raise PermanentError(f"{DOCUMENT_SERVICE} GET {path.split('/')[0]}: the answer is not a PDF "
                                 f"({len(data)} bytes)", service=DOCUMENT_SERVICE, code="document-not-pdf")
        return data

    def probe(self) -> None:
        """The cheapest read there is: is Moment there, and does it take our key?"""
        self._get(PROBE_ROUTE, {PAGE_PARAM: FIRST_PAGE, SIZE_PARAM: 1})

    def list(self, entity: str, *, modified_from: datetime | None = None,
             page_size: int = PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Every record (or every one modified at or after ``modified_from``), by id."""
        for _, content in self.pages(entity, modified_from=modified_from, page_size=page_size):
            yield from content

    def pages(self, entity: str, *, modified_from: datetime | None = None, page_size: int = PAGE_SIZE,
              start: int = FIRST_PAGE) -> Iterator[tuple[int, list]]:
        """(page number, records) from page ``start`` on; a page that fails raises, and the
        caller can go on from that page."""
        page = start
        seen = (start - FIRST_PAGE) * page_size
        while True:
            params: dict[str, Any] = {PAGE_PARAM: page, SIZE_PARAM: page_size, "sort": "id,asc"}
            if modified_from is not None:
                params[MODIFIED_FROM_PARAM] = modified_from.isoformat()
            body = self._get(entity, params)
            content = body.get("content") if isinstance(body, dict) else None
            if not isinstance(content, list):
                # a page we cannot read is a passing fault, not the end of the list
                raise TransientError(f"{self.service} GET {entity}: page {page} cannot be read",
                                     service=self.service)
            yield page, content
            seen += len(content)
            total = (body.get("page") or {}).get("totalElements") if isinstance(body.get("page"), dict) else None
            if not content or len(content) < page_size or (total is not None and seen >= total):
                return
            page += 1
