"""Diagnostics as key=value (logfmt) or JSON lines on stderr, with secrets
scrubbed from every record. User-facing output (tables, plans) goes to stdout
through click and never through here."""

from __future__ import annotations

import json
import logging
import sys
from typing import Iterable


class _Redact(logging.Filter):
    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        for secret in self.secrets:
            msg = msg.replace(secret, "***")
        record.msg, record.args = msg, ()
        return True


class _Logfmt(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace('"', "'")
        return f'ts={self.formatTime(record, "%Y-%m-%dT%H:%M:%S")} level={record.levelname.lower()} ' \
               f'logger={record.name} msg="{msg}"'


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                           "logger": record.name, "msg": record.getMessage()})


def setup(fmt: str = "kv", level: str = "info", secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Logfmt())
    handler.addFilter(_Redact(secrets))
    root = logging.getLogger("sluice")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
