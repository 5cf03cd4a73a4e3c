"""Where and how a member logs: etcd 3.4's --logger, --log-outputs and --log-level.

- ``--logger capnslog`` (etcd 3.4's default): one text line per record,
  ``2026-11-30 12:00:00,123 INFO fastkv.server: message``.
- ``--logger zap``: one JSON object per line, as etcd's zap logger writes them:
  ``{"level":"info","ts":"2026-11-30T12:00:00.123Z","logger":"fastkv.server",
  "caller":"fastkv/server.py:431","msg":"..."}`` (plus ``"error"`` with the traceback
  of a logged exception), for log shippers that parse etcd's JSON.
- ``--log-outputs``: ``default`` (stderr), ``stderr``, ``stdout``, or file paths
  (appended to), comma-separated; every record goes to each.
"""
from __future__ import annotations

import logging
import os
import sys
import time

import orjson

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
              "error": logging.ERROR, "panic": logging.CRITICAL, "fatal": logging.CRITICAL}
_ZAP_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
               logging.ERROR: "error", logging.CRITICAL: "fatal"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ZapJSONFormatter(logging.Formatter):
    """A record as one line of zap's production JSON encoding."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        path = record.pathname
        if path.startswith(_PACKAGE_ROOT):
            path = path[len(_PACKAGE_ROOT) + 1:]
        out = {"level": _ZAP_LEVELS.get(record.levelno, record.levelname.lower()),
               "ts": f"{ts}.{int(record.msecs):03d}Z", "logger": record.name,
               "caller": f"{path}:{record.lineno}", "msg": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


def handlers_for(outputs: list[str]) -> list[logging.Handler]:
    """One handler per --log-outputs entry (files opened for appending)."""
    out: list[logging.Handler] = []
    for name in outputs or ["default"]:
        if name in ("default", "stderr"):
            out.append(logging.StreamHandler(sys.stderr))
        elif name == "stdout":
            out.append(logging.StreamHandler(sys.stdout))
        else:
            out.append(logging.FileHandler(name, mode="a", encoding="utf-8"))
    return out


def configure(level: str = "info", logger: str = "capnslog",
              outputs: list[str] | None = None) -> None:
    """Set up the root logger for a member process (replacing earlier handlers)."""
    formatter = ZapJSONFormatter() if logger == "zap" else logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers_for(outputs or []):
        h.setFormatter(formatter)
        root.addHandler(h)
    root.setLevel(LOG_LEVELS[level])
