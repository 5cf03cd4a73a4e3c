"""What every nemesis workload uses to talk to a member: the v3 JSON gateway over HTTP."""
from __future__ import annotations

import base64

import requests

REQUEST_TIMEOUT = 2.0


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def unb64(s: str) -> str:
    return base64.b64decode(s).decode()


class NoAnswer(Exception):
    """The request got no usable answer: it may or may not have taken effect."""


def post(session: requests.Session, url: str, path: str, body: dict,
         timeout: float = REQUEST_TIMEOUT) -> dict:
    """POST a JSON request; the decoded answer, or NoAnswer (no answer, a non-200, bad JSON)."""
    try:
        r = session.post(url + path, json=body, timeout=timeout)
    except requests.RequestException as exc:
        raise NoAnswer(f"{type(exc).__name__}") from None
    if r.status_code != 200:
        raise NoAnswer(f"HTTP {r.status_code}: {r.text[:200]}")
    try:
        return r.json()
    except ValueError:
        raise NoAnswer(f"bad JSON: {r.text[:200]}") from None
