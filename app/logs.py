"""Logging: one handler on the root logger in every process (web, worker, beat), its lines text or
JSON (LOG_FORMAT), its level from LOG_LEVEL; and the ids that tie a record to the web request and
the Celery task it belongs to, carried from a request into the tasks it queues and from a task
into the tasks that one queues, so that one id follows a sync from its trigger to each message.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from contextvars import Token
from dataclasses import dataclass
from dataclasses import replace
from datetime import UTC
from datetime import datetime
from typing import Any

import msgspec
from celery import signals
from celery.utils.log import get_multiprocessing_logger
from flask import Flask
from flask import Response
from flask import request
from flask.logging import default_handler

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HANDLER_NAME = "manifest-syncer"
REQUEST_ID_HEADER = "X-Request-ID"
# The header of a task's message that carries the request id from its publisher to the task.
TASK_HEADER = "x_request_id"
MAX_REQUEST_ID = 128
# An id a client or a proxy sent is kept when it is an id (a uuid, a hex or base64 token, a
# trace id): nothing that could forge a log line or a header, nor bloat every line.
_SANE_ID = re.compile(rf"[A-Za-z0-9._~:/+=@-]{{1,{MAX_REQUEST_ID}}}")
# Terminal colours some libraries put in their messages (werkzeug's dev server): noise in JSON.
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Correlation:
    """What a record is part of: a web request (its id), a Celery task (its id and name)."""

    request_id: str | None = None
    task_id: str | None = None
    task: str | None = None


_NOWHERE = Correlation()
_current: ContextVar[Correlation] = ContextVar("manifest_syncer_correlation", default=_NOWHERE)
# A task's context is put back as it was when the task ends (tasks run eagerly can nest).
_task_tokens: dict[str, Token[Correlation]] = {}


def current_request_id() -> str:
    """Return the id the logs carry for this request or task (a new one outside both): what a
    sync records as the request that asked for it."""
    return _current.get().request_id or uuid.uuid4().hex


def sane_request_id(value: str | None) -> str:
    """Return `value` if it is a sane request id (bounded, token characters), else a new one."""
    if value and _SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


# -- where records go ---------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Send the app's records to the root logger, with one handler, at LOG_LEVEL, in
    LOG_FORMAT; give each request an id and carry it into the Celery tasks it queues."""
    # The package is called "app", so Flask's app.logger is this package's logger: without
    # this, every module's records would also go through Flask's own stderr handler, and
    # Celery, which captures stderr, would print them twice.
    app.logger.removeHandler(default_handler)
    _install_handler(app.config["LOG_FORMAT"])
    logging.getLogger("app").setLevel(app.config["LOG_LEVEL"])
    # urllib3 logs each request's path at DEBUG: a Discord or webhook URL's path is its token.
    root = logging.getLogger()
    logging.getLogger("urllib3.connectionpool").setLevel(max(logging.INFO, root.level))
    app.before_request(_start_request)
    app.after_request(_echo_request_id)
    app.teardown_request(_end_request)
    _connect_celery_signals()


def _install_handler(log_format: str) -> None:
    """Give the root logger our handler (unless logging was set up by whoever runs the app:
    gunicorn's logconfig_dict, a test runner), and this format."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == HANDLER_NAME), None)
    if handler is None:
        if root.handlers:
            return
        handler = logging.StreamHandler()  # stderr
        handler.set_name(HANDLER_NAME)
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    if log_format == "json":
        # A Python warning is printed to stderr as lines of text unless logging takes it.
        logging.captureWarnings(True)


def _json_formatter() -> JsonFormatter | None:
    """Return the JSON formatter of our root handler, if this process logs JSON."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == HANDLER_NAME and isinstance(handler.formatter, JsonFormatter):
            return handler.formatter
    return None


# -- how a record reads -------------------------------------------------------------------


class TextFormatter(logging.Formatter):
    """One line a person reads: time, level, logger, [the request and task ids,] message."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        """Format the line, with the ids of the request and task it belongs to, if any."""
        line = super().formatMessage(record)
        ids = _current.get()
        shown = [f"{name}={value}" for name, value in _ids(ids) if name != "task"]
        if not shown:
            return line
        head = f"{record.asctime} {record.levelname} {record.name}"
        return f"{head} [{' '.join(shown)}]{line[len(head) :]}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for a log platform: time (ISO 8601, UTC), level, logger,
    message, exception, and the request id, task id and task name when there are any.

    Only these fields: a record's other attributes (`extra`, a library's arguments) may hold
    what must not be logged, such as a URL whose path is a token.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as one line of JSON."""
        moment = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _COLOURS.sub("", record.getMessage()),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry.update(_ids(_current.get()))
        if record.name == "gunicorn.access" and isinstance(record.args, Mapping):
            entry.update(_access_fields(record.args))
        return msgspec.json.encode(entry).decode()


def _ids(ids: Correlation) -> list[tuple[str, str]]:
    """Return the ids that are set, by name."""
    named = (("request_id", ids.request_id), ("task_id", ids.task_id), ("task", ids.task))
    return [(name, value) for name, value in named if value]


# Gunicorn's access log: its atoms (dict keys) and the fields they become; the request id is
# the one the app answered with.
_ACCESS_FIELDS = {
    "m": "method",
    "U": "path",
    "s": "status",
    "B": "bytes",
    "M": "duration_ms",
    "h": "remote_addr",
    "{x-request-id}o": "request_id",
}


def _access_fields(atoms: Mapping[str, Any]) -> dict[str, Any]:
    """Return the fields of a gunicorn access record, from its atoms (these only)."""
    fields = {field: atoms.get(atom) for atom, field in _ACCESS_FIELDS.items()}
    if isinstance(fields["status"], str) and fields["status"].isdigit():
        fields["status"] = int(fields["status"])
    return {field: value for field, value in fields.items() if value not in (None, "-")}


def gunicorn_logconfig(log_format: str) -> dict[str, Any]:
    """Return gunicorn's `logconfig_dict` for LOG_FORMAT: for "json", gunicorn's own records and
    its access log as JSON lines on stderr, and the root logger left to the app (init_app);
    for "text", nothing (gunicorn's defaults)."""
    if log_format != "json":
        return {}
    own = {"level": "INFO", "handlers": ["json"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "json": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"gunicorn.error": own, "gunicorn.access": own},
        # No handler: create_app puts the app's own on the root logger.
        "root": {"level": "INFO", "handlers": []},
    }


# -- web requests -------------------------------------------------------------------------


def _start_request() -> None:
    """Give the request its id: the X-Request-ID it came with when sane, else a new one."""
    _current.set(Correlation(request_id=sane_request_id(request.headers.get(REQUEST_ID_HEADER))))


def _echo_request_id(response: Response) -> Response:
    """Answer with the request's id, for the client, its proxies and the access log."""
    request_id = _current.get().request_id
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _end_request(_error: BaseException | None) -> None:
    """Forget the request's id: the thread serves another request next."""
    _current.set(_NOWHERE)


# -- Celery tasks -------------------------------------------------------------------------


def _connect_celery_signals() -> None:
    """Connect the signals every Celery app of this process sends (once, whatever the app)."""
    signals.before_task_publish.connect(_carry_request_id, weak=False, dispatch_uid=__name__)
    signals.task_prerun.connect(_start_task, weak=False, dispatch_uid=__name__)
    signals.task_postrun.connect(_end_task, weak=False, dispatch_uid=__name__)
    signals.after_setup_logger.connect(_json_celery_loggers, weak=False, dispatch_uid=__name__)
    signals.after_setup_task_logger.connect(_json_celery_loggers, weak=False, dispatch_uid=__name__)
    signals.celeryd_after_setup.connect(_banner_as_a_record, weak=False, dispatch_uid=__name__)


def _carry_request_id(
    sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """Put the current request id in the message of a task being queued; a task queued outside
    any request (beat, the CLI) starts one of its own, shared by the tasks it queues."""
    if headers is None:
        return
    ids = _current.get()
    request_id = headers.get(TASK_HEADER) or ids.request_id or uuid.uuid4().hex
    headers[TASK_HEADER] = request_id
    token = _current.set(replace(ids, request_id=request_id))
    try:
        log.info("Queued task %s[%s]", sender, headers.get("id"))
    finally:
        _current.reset(token)


def _start_task(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """Say which task runs, and which request it serves: its message's, else its argument's
    (a sync records the id of the request that triggered it), else the one it runs in (eager)."""
    if task_id is None or task is None:
        return
    arguments = kwargs.get("kwargs") or {}
    carried = getattr(task.request, TASK_HEADER, None) or arguments.get("request_id")
    if isinstance(carried, str) and _SANE_ID.fullmatch(carried):
        request_id: str | None = carried
    else:
        request_id = _current.get().request_id
    ids = Correlation(request_id=request_id, task_id=task_id, task=task.name)
    _task_tokens[task_id] = _current.set(ids)


def _end_task(task_id: str | None = None, **_: Any) -> None:
    """Put back the context the task started in."""
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is None:
        return
    try:
        _current.reset(token)
    except ValueError:  # set in another context (a thread pool's): nothing of it is left here
        _current.set(_NOWHERE)


def _json_celery_loggers(logger: logging.Logger | None = None, **_: Any) -> None:
    """In JSON mode, make the handlers Celery gave its own loggers (task logger, multiprocessing)
    write JSON too: a line of text among JSON lines is one a log platform cannot read."""
    formatter = _json_formatter()
    if formatter is None:
        return
    for each in (logger, get_multiprocessing_logger()):
        for handler in each.handlers if each is not None else ():
            if handler.get_name() != HANDLER_NAME:
                handler.setFormatter(formatter)


def _banner_as_a_record(instance: Any = None, **_: Any) -> None:
    """In JSON mode, log the worker's start-up banner as one record instead of printing it."""
    if instance is None or _json_formatter() is None:
        return
    instance.quiet = True
    banner = instance.startup_info(artlines=False) + (instance.extra_info() or "")
    log.info("Celery worker starting\n%s", banner.strip("\n"))
