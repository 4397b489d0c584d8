"""Logs every process writes the same way: one JSON object per line (or plain text with
``MSB1_LOG_FORMAT=text``), at ``MSB1_LOG_LEVEL``.

Each line carries ``time``, ``level``, ``logger``, ``process`` (worker, beat, webhooks) and
``message``; a line written while a sync runs also carries ``task_id``, ``integration``,
``data_type``, ``moment_id`` and, once the record is fetched, ``number`` (when it is a valid
number of its kind; else ``number_shape``, e.g. "11 digits"). Nothing else of a record is
logged: no names, emails, addresses or refused values (``schemas.text``, ``worker.ops.sentry``).
A traceback names an exception by its type only, unless it is one of ours
(``errors.IntegrationError``, whose ``str()`` is written to be safe): another library's
message may quote any value it was given.

    {"time": "2026-11-27T09:12:01.532Z", "level": "INFO", "logger": "worker.sync.task",
     "process": "worker", "message": "acme customer 100001: created", "task_id": "1f0c…",
     "integration": "acme", "data_type": "customers", "moment_id": 1000123, "number": "100001"}
"""
from __future__ import annotations

import io
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from celery import current_task
from celery.app.trace import LOG_SUCCESS
from pythonjsonlogger.json import JsonFormatter

from errors import IntegrationError
from worker.config.settings import Settings

# what the running sync is about; set by the sync mechanism, read by every log line
_RECORD: ContextVar[dict[str, Any]] = ContextVar("msb1_record", default={})
RECORD_FIELDS = ("integration", "data_type", "moment_id", "number", "number_shape")


@contextmanager
def record_context(**fields: Any) -> Iterator[None]:
    """Within the block, log lines name this record (integration, data type, Moment id)."""
    token = _RECORD.set({k: v for k, v in fields.items() if v is not None})
    try:
        yield
    finally:
        _RECORD.reset(token)


def bind(**fields: Any) -> None:
    """Add to the running record's context (its number, once it is known); a field given
    as None is taken out of it."""
    merged = {**_RECORD.get(), **fields}
    _RECORD.set({k: v for k, v in merged.items() if v is not None})


def _current_task_id() -> str | None:
    try:
        task = current_task._get_current_object()
    except Exception:
        return None
    request = getattr(task, "request", None) if task is not None else None
    return getattr(request, "id", None)


class ContextFilter(logging.Filter):
    """Puts the task id, the record's context and the process name on every record."""

    def __init__(self, process: str):
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process
        task_id = _current_task_id()
        if task_id and not hasattr(record, "task_id"):
            record.task_id = task_id
        for key, value in _RECORD.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def safe_exception(exc: BaseException) -> str:
    """One exception's last line: its type, and its message only when it is one of ours."""
    if isinstance(exc, IntegrationError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__module__}.{type(exc).__qualname__} (message withheld: it may quote a value)"


def safe_traceback(exc_info) -> str:
    """A traceback (every frame, chained causes included) whose exception lines are
    ``safe_exception``'s."""
    _, exc, _ = exc_info
    if exc is None:
        return ""
    lines: list[str] = []
    seen: set[int] = set()
    chain: list[BaseException] = []
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    for i, exc in enumerate(reversed(chain)):
        if i:
            lines.append("\nThe above exception led to the following:\n\n")
        if exc.__traceback__ is not None:
            lines.append("Traceback (most recent call last):\n")
            lines.extend(traceback.format_tb(exc.__traceback__))
        lines.append(safe_exception(exc) + "\n")
    return "".join(lines).rstrip("\n")


class _Json(JsonFormatter):
    def formatException(self, ei) -> str:
        return safe_traceback(ei)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class _Text(logging.Formatter):
    """``2026-11-27 09:12:01 INFO worker.sync.task [acme customers 1000123 task 1f0c…] message``"""

    def formatException(self, ei) -> str:
        return safe_traceback(ei)

    def format(self, record: logging.LogRecord) -> str:
        context = [str(getattr(record, k)) for k in ("integration", "data_type", "moment_id") if hasattr(record, k)]
        if getattr(record, "task_id", None):
            context.append(f"task {record.task_id}")
        record.context = f" [{' '.join(context)}]" if context else ""
        return super().format(record)


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "text":
        return _Text("%(asctime)s %(levelname)s %(name)s%(context)s %(message)s", "%Y-%m-%d %H:%M:%S")
    return _Json(
        ["asctime", "levelname", "name", "process_name", "message"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "process_name": "process",
                       "exc_info": "error"},
        json_ensure_ascii=False,            # a name in a log line must be findable as written
        reserved_attrs=[*_RESERVED, "context"])


_RESERVED = ("args", "created", "exc_info", "exc_text", "filename", "funcName", "levelno", "lineno", "module",
             "msecs", "msg", "pathname", "process", "processName", "relativeCreated", "stack_info",
             "thread", "threadName", "taskName")


def configure_logging(settings: Settings, process: str, capture_output: bool = False) -> None:
    """Every log line of this process to stderr, in the configured format and level.

    ``capture_output`` (the worker and beat): in JSON, what is printed instead of logged (Celery's
    banner and "worker: Warm shutdown", a library's print, a warning) becomes a log line too, so
    that every line of the process's output is one JSON object (``jq`` reads them all)."""
    stream = sys.stderr.original if isinstance(sys.stderr, LinesToLog) else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(settings.log_format))
    handler.addFilter(ContextFilter(process))
    if capture_output and settings.log_format == "json":
        logging.captureWarnings(True)
        if not isinstance(sys.stdout, LinesToLog):
            sys.stdout = LinesToLog("stdout", logging.INFO, sys.stdout)
        if not isinstance(sys.__stdout__, LinesToLog):        # Celery prints its banner there
            sys.__stdout__ = sys.stdout
        if not isinstance(sys.stderr, LinesToLog):
            sys.stderr = LinesToLog("stderr", logging.WARNING, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    # Celery's "received" and "succeeded" lines say per task what our own line says (with the
    # record's number, outcome and "seconds"): kept for DEBUG, a cost of every task otherwise.
    # Its other lines (a retry, a task that raised) stay.
    debug = settings.log_level == "DEBUG"
    logging.getLogger("celery.worker.strategy").setLevel(logging.DEBUG if debug else logging.WARNING)
    trace = logging.getLogger("celery.app.trace")
    for old in [f for f in trace.filters if isinstance(f, _NoSuccessLines)]:
        trace.removeFilter(old)
    if not debug:
        trace.addFilter(_NoSuccessLines())
    if not any(isinstance(f, _SafeTaskFailures) for f in trace.filters):
        trace.addFilter(_SafeTaskFailures())
    # our own HTTP calls are logged by the clients, without query strings; urllib3's debug
    # lines would print the URL
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLevelName(settings.log_level)))


class _NoSuccessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg is not LOG_SUCCESS


class _SafeTaskFailures(logging.Filter):
    """Celery's line for a task that raised ("Task ... raised unexpected: ValueError('...')")
    carries the exception's repr and its traceback text in the message and in ``data``: both
    are ``safe_exception``'s and ``safe_traceback``'s instead (another library's exception
    may quote any value it was given)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = record.args if isinstance(record.args, dict) else None
        exc = record.exc_info[1] if record.exc_info else None
        if context is not None and "exc" in context and exc is not None:
            context["exc"] = safe_exception(exc)
            if "traceback" in context:
                context["traceback"] = safe_traceback(record.exc_info)
            data = getattr(record, "data", None)
            if isinstance(data, dict) and data is not context:
                data.update(exc=context["exc"], traceback=context.get("traceback"))
        return True


class LinesToLog(io.TextIOBase):
    """A text stream whose lines are log lines (logger ``stdout`` or ``stderr``). One write
    of several lines (Celery's banner) is one log line; a line written while a log line is
    being written goes to the original stream (no loop)."""

    def __init__(self, name: str, level: int, original):
        super().__init__()
        self.original, self.level, self.log = original, level, logging.getLogger(name)
        self._buffer, self._lock, self._inside = "", threading.Lock(), threading.local()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> None:     # Celery's shutdown line writes to a file number: it is logged instead
        return None

    def write(self, text: str) -> int:
        if getattr(self._inside, "on", False):
            return self.original.write(text)
        with self._lock:
            self._buffer += text
            if not self._buffer.endswith("\n"):
                return len(text)
            lines, self._buffer = self._buffer.strip("\n"), ""
        self._emit(lines)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            lines, self._buffer = self._buffer.strip("\n"), ""
        self._emit(lines)

    def _emit(self, lines: str) -> None:
        if not lines.strip():
            return
        self._inside.on = True
        try:
            self.log.log(self.level, "%s", lines.strip())
        finally:
            self._inside.on = False
