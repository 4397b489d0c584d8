"""A company's files in SpareBank 1 Regnskap: a document uploaded to the Files host and
linked to a voucher (its documentation, "bilag"). From the domain brief ("Files"):

* ``GET {app host}/api/endpoints`` names the Files host (asked once an hour per process);
* ``POST {files}/api/file``, multipart, the fields ``Token`` (the access token), ``Key``
  (the company key) and ``File``. A part of another name uploads nothing and the host still
  answers 200: the answer is checked for the stored file's ID and size;
* ``POST {base}/api/biz/files/{id}?action=link&entitytype=JournalEntry&entityid={voucher}``;
* ``GET {base}/api/biz/files/JournalEntry/{voucher}``: the voucher's files, and
  ``GET {base}/api/biz/files?filter=Name eq '...'``: a file uploaded and never linked.

The business API calls go through the company's ``SB1Client`` (its token, rate limit and
circuit); the Files host has no circuit of its own (``FILES_SERVICE`` is no circuit's
service): a Files host that fails holds back documents only, never a voucher.
"""
from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import urlsplit

from urllib3 import encode_multipart_formdata

from errors import PermanentError, TransientError

from .filters import quote
from .http import Http, Response, Timeouts, send
from .ratelimit import Limited
from .sb1 import SB1Client, authorized

ENDPOINTS_PATH = "/api/endpoints"
FILES_HOST_KEY = "Files"            # the Files host in the answer of /api/endpoints (assumed: its URL)
UPLOAD_PATH = "/api/file"
FILE_FIELD = "File"                 # must be named so: another name uploads nothing (and answers 200)
# the stored file's ID in the upload's answer: the business API's File ID (assumed), else "ID"
UPLOADED_ID_FIELDS = ("ExternalId", "ID")
FILES_ROUTE = "files"               # the business API's File entity
LINK_ACTION = "link"
VOUCHER_ENTITY = "JournalEntry"
FILES_SERVICE = "SpareBank 1 Regnskap (Files)"
ENDPOINTS_TTL = 3600.0

_hosts: dict[str, tuple[str, float]] = {}       # app host -> (its Files host, until when)
_hosts_mutex = threading.Lock()


class FilesClient:
    """One company's files: upload to the Files host, link to a voucher, list a voucher's."""

    service = FILES_SERVICE

    def __init__(self, sb1: SB1Client, base_url: str, *, http: Http | None = None,
                 timeouts: Timeouts = Timeouts(), limits: Limited | None = None):
        self.sb1 = sb1
        self.app_host = base_url.rstrip("/")
        self.http = http or Http()
        self.timeouts = timeouts
        self.limits = limits or Limited(None, (), self.service)

    # --- the Files host ------------------------------------------------------------------

    def files_host(self) -> str:
        """The Files host, as the app host names it (kept an hour)."""
        now = time.time()
        hit = _hosts.get(self.app_host)
        if hit and hit[1] > now:
            return hit[0]
        resp = send(self.http, "GET", self.app_host + ENDPOINTS_PATH, service=self.service,
                    timeouts=self.timeouts, headers={"Accept": "application/json"})
        try:
            body = resp.json()
        except ValueError:
            body = None
        found = None
        if isinstance(body, dict):
            for key, value in body.items():
                if str(key).lower() == FILES_HOST_KEY.lower():
                    found = value.get("Url") or value.get("url") if isinstance(value, dict) else value
        if not isinstance(found, str) or not self._same_trust(found):
            raise TransientError(f"{self.service} GET {ENDPOINTS_PATH}: no usable {FILES_HOST_KEY} host in the "
                                 "answer", service=self.service)
        host = found.rstrip("/")
        with _hosts_mutex:
            _hosts[self.app_host] = (host, now + ENDPOINTS_TTL)
        return host

    def _same_trust(self, url: str) -> bool:
        """The token goes there: https, or plain http only when the app host is (a local stand-in)."""
        parts = urlsplit(url)
        return bool(parts.hostname) and (parts.scheme == "https" or
                                         (parts.scheme == "http" and urlsplit(self.app_host).scheme == "http"))

    def upload(self, name: str, data: bytes, content_type: str = "application/pdf",
               *, field: str = FILE_FIELD) -> int:
        """Store ``data`` as ``name``; the new file's ID. Raises ``PermanentError`` (code
        ``document-not-stored``) when the host answers without having stored it."""
        url = self.files_host() + UPLOAD_PATH

        def call(token: str) -> Response:
            body, form_type = encode_multipart_formdata({
                "Token": token, "Key": self.sb1.company_key, field: (name, data, content_type)})
            return send(self.http, "POST", url, service=self.service, timeouts=self.timeouts, body=body,
                        headers={"Content-Type": form_type, "Accept": "application/json"})
        resp = authorized(self.sb1.tokens, self.limits, call)
        try:
            answer = resp.json() if resp.data.strip() else None
        except ValueError:
            answer = None
        file_id = stored_id(answer)
        size = answer.get("Size") if isinstance(answer, dict) else None
        if file_id is None or (isinstance(size, int) and size != len(data)):
            raise PermanentError(
                f"{self.service} POST {UPLOAD_PATH}: answered {resp.status} but stored no file"
                + (f" ({size} of {len(data)} bytes)" if file_id is not None else ""),
                status=resp.status, service=self.service, code="document-not-stored")
        return file_id

    # --- the business API ----------------------------------------------------------------

    def link(self, file_id: int, voucher_id: int) -> None:
        self.sb1.request("POST", f"{FILES_ROUTE}/{int(file_id)}", params={
            "action": LINK_ACTION, "entitytype": VOUCHER_ENTITY, "entityid": int(voucher_id)})

    def linked(self, voucher_id: int) -> list[dict[str, Any]]:
        """The files linked to a voucher."""
        body = self.sb1.request("GET", f"{FILES_ROUTE}/{VOUCHER_ENTITY}/{int(voucher_id)}").json()
        return [f for f in body if isinstance(f, dict)] if isinstance(body, list) else []

    def named(self, name: str) -> list[dict[str, Any]]:
        """The company's files called ``name`` (checked here: the platform ignores a filter it
        does not understand), oldest first."""
        rows = self.sb1.query(FILES_ROUTE, filter=f"Name eq {quote(name)}", top=50)
        return sorted((r for r in rows if r.get("Name") == name and isinstance(r.get("ID"), int)),
                      key=lambda r: r["ID"])


def stored_id(answer: Any) -> int | None:
    """The stored file's ID in an upload's answer, or None (nothing was stored)."""
    if not isinstance(answer, dict):
        return None
    for key in UPLOADED_ID_FIELDS:
        value = answer.get(key)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
