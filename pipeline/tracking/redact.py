"""Secrets never reach the store: what this package writes goes through :func:`scrub` first.

Owns the rule for what a secret is (the value of an environment variable named like one, the
password of a URI) and how it is written instead (``***``). Every logging helper of
``pipeline.tracking`` calls it; nothing else needs to.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any


def redact(uri: str) -> str:
    """The URI without a password, for messages and tags."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


#: Environment variables whose values never reach the store (checked by name).
_SECRET_NAME = re.compile(r"passw(or)?d|secret|token|api_?key|access_?key|credential|private_?key", re.IGNORECASE)
_URI_WITH_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]+:[^\s/@]+@[^\s]+")


def scrub(value: Any) -> Any:
    """``value`` with every secret replaced by ``***``: the value of any environment variable
    named like a secret (``*PASSWORD*``, ``*SECRET*``, ``*TOKEN*``, ``*API_KEY*``, ...), also
    when a config interpolated it, and the password of any URI. Dicts and lists recursively."""
    secrets = sorted({v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 8}, key=len, reverse=True)

    def one(item: Any) -> Any:
        if isinstance(item, dict):
            return {one(k): one(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(one(v) for v in item)
        if not isinstance(item, str):
            return item
        for secret in secrets:
            item = item.replace(secret, "***")
        return _URI_WITH_PASSWORD.sub(lambda m: redact(m.group(0)), item)

    return one(value)
