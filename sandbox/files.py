"""Files in the stand-ins: Moment's invoice PDF, and SpareBank 1 Regnskap's Files host
with the business API's file routes (link, a voucher's files, files by name).

As the domain brief has the platform: ``GET /api/endpoints`` names the Files host (here a
path of the same server, ``/files-host``); ``POST {files}/api/file`` takes the multipart
fields ``Token``, ``Key`` and ``File``, and a part of any other name stores nothing and
still answers 200 (with an empty body); ``POST /api/biz/files/{id}?action=link&entitytype=
JournalEntry&entityid={id}`` links a stored file; ``GET /api/biz/files/JournalEntry/{id}``
lists a voucher's files; ``GET /api/biz/files?filter=Name eq '...'`` finds files by name.
Register with one line each: ``install_moment_pdf`` in ``create_moment_app``,
``install_files`` in ``create_sb1_app``.
"""
from __future__ import annotations

import copy
import hashlib
import re
import threading
from typing import Any

from flask import Flask, Response, jsonify, request

FILES_HOST_PATH = "/files-host"
_NAME_FILTER = re.compile(r"\s*Name\s+eq\s+'((?:[^']|'')*)'\s*\Z")


def pdf_of(invoice: dict[str, Any]) -> bytes:
    """A small, valid one-page PDF saying which invoice it is."""
    text = f"Faktura {invoice.get('invoiceNumber', '')} ({invoice.get('id')})".encode("latin-1", "replace")
    stream = b"BT /F1 18 Tf 72 720 Td (" + text.replace(b"(", b"[").replace(b")", b"]") + b") Tj ET"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def install_moment_pdf(app: Flask, store: Any, prefix: str) -> None:
    """``GET {prefix}/<company>/invoices/<id>/pdf``: the invoice as a PDF (Basic auth as the
    other routes; 404 for an invoice Moment does not have)."""

    @app.get(prefix + "/<company>/invoices/<int:id>/pdf")
    def invoice_pdf(company: str, id: int):
        store.count_request("GET", "invoices/pdf")
        auth = request.authorization
        if auth is None or auth.username != "apikey" or not store.check_api_key(company, auth.password):
            return jsonify({"status": 401, "error": "Unauthorized"}), 401
        invoice = store.get(company, "invoices", id)
        if invoice is None:
            return jsonify({"status": 404, "error": "Not Found", "message": f"No invoice with id {id}"}), 404
        return Response(pdf_of(invoice), mimetype="application/pdf")


class FilesStore:
    """The stored files of every company: the File records (with their links) and bytes."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.files: dict[str, dict[int, dict[str, Any]]] = {}     # lower-cased company key -> id -> File
        self.content: dict[int, bytes] = {}
        self.uploads = 0            # answered uploads, stored or not

    def of(self, company_key: str) -> list[dict[str, Any]]:
        """A company's files, by ID, with their ``EntityLinks``."""
        with self.lock:
            table = self.files.get(company_key.lower(), {})
            return [copy.deepcopy(table[i]) for i in sorted(table)]

    def linked(self, company_key: str, entity_type: str, entity_id: int) -> list[dict[str, Any]]:
        return [f for f in self.of(company_key)
                if any(ln["EntityType"].lower() == entity_type.lower() and ln["EntityID"] == entity_id
                       for ln in f["EntityLinks"])]


def install_files(app: Flask, store: Any) -> FilesStore:
    """The Files host and the business API's file routes on the SpareBank 1 stand-in; the
    files are kept in ``store.files`` (a ``FilesStore``)."""
    files = FilesStore()
    store.files = files

    def company_of_token() -> tuple[str | None, tuple[Response, int] | None]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or store.check_token(token.strip()) is None:
            return None, (jsonify({"Message": "Unauthorized"}), 401)
        key = request.headers.get("CompanyKey", "").strip()
        if store.company(key) is None:
            return None, (jsonify({"Message": "Missing or unknown CompanyKey"}), 401)
        return key.lower(), None

    @app.get("/api/endpoints")
    def endpoints():
        base = request.host_url.rstrip("/")
        return jsonify({"AppFramework": base, "Identity": base, "Files": base + FILES_HOST_PATH})

    @app.post(FILES_HOST_PATH + "/api/file")
    def upload():
        if store.check_token(request.form.get("Token", "")) is None:
            return jsonify({"Message": "Unauthorized"}), 401
        key = request.form.get("Key", "").strip()
        if store.company(key) is None:
            return jsonify({"Message": "Unknown company key"}), 401
        with files.lock:
            files.uploads += 1
        part = request.files.get("File")
        if part is None:        # the platform's trap: another field name stores nothing, and says 200
            return Response(b"", status=200)
        data = part.read()
        file_id = store._allocate_id()
        doc = {"ID": file_id, "Name": part.filename or "file", "Size": len(data),
               "ContentType": part.mimetype or "application/octet-stream",
               "Md5": hashlib.md5(data).hexdigest(), "StorageReference": f"sandbox/{file_id}",
               "StatusCode": None, "EntityLinks": []}
        with files.lock:
            files.files.setdefault(key.lower(), {})[file_id] = doc
            files.content[file_id] = data
        for listener in list(store.write_listeners):     # (a test may kill the worker here)
            listener(key, "POST", "files-host", copy.deepcopy(doc))
        return jsonify({"ExternalId": str(file_id), "Name": doc["Name"], "Size": len(data)})

    @app.route("/api/biz/files", methods=["GET"])
    def files_by_name():
        key, refused = company_of_token()
        if refused:
            return refused
        store.count_request("GET", "files")
        found = files.of(key)
        match = _NAME_FILTER.fullmatch(request.args.get("filter") or "")
        if match:       # another filter is ignored, as the platform ignores one it does not understand
            name = match.group(1).replace("''", "'")
            found = [f for f in found if f["Name"] == name]
        return jsonify(found[: int(request.args.get("top") or 50)])

    @app.route("/api/biz/files/<int:file_id>", methods=["POST"])
    def link(file_id: int):
        key, refused = company_of_token()
        if refused:
            return refused
        store.count_request("POST", "files")
        args = request.args
        if args.get("action") != "link":
            return jsonify({"Message": f"Action '{args.get('action')}' is not supported by the sandbox"}), 400
        entity_type, entity_id = args.get("entitytype", ""), args.get("entityid", "")
        if entity_type.lower() != "journalentry" or not entity_id.isdigit():
            return jsonify({"Message": "entitytype and entityid are required"}), 400
        with store.lock:
            voucher = store.company(key).tables["journalentries"].get(int(entity_id))
        with files.lock:
            doc = files.files.get(key, {}).get(file_id)
            if doc is None or voucher is None:
                return jsonify({"Message": f"No {'File' if doc is None else 'JournalEntry'} with that ID"}), 404
            link_ = {"EntityType": "JournalEntry", "EntityID": int(entity_id)}
            if link_ not in doc["EntityLinks"]:
                doc["EntityLinks"].append(link_)
            answer = copy.deepcopy(doc)
        for listener in list(store.write_listeners):
            listener(key, "POST", "files", answer)
        return jsonify(answer)

    @app.route("/api/biz/files/<entity_type>/<int:entity_id>", methods=["GET"])
    def entity_files(entity_type: str, entity_id: int):
        key, refused = company_of_token()
        if refused:
            return refused
        store.count_request("GET", "files")
        return jsonify(files.linked(key, entity_type, entity_id))

    return files
