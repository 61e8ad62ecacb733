"""Secrets never reach the store or the terminal: what ``pipeline.tracking`` writes, Hydra's job
files and every ``error:`` line of the command line go through :func:`scrub` first.

Owns the rule for what a secret is and how it is written instead (``***``):

- the value of any environment variable named like a secret (:data:`SECRET_NAME`), as typed and
  percent-encoded, of any length: one of 8 characters or more wherever it occurs, a shorter one
  wherever it stands delimited (a whole value, or a part of one with no letter or digit glued to
  it: ``job-ab``, ``ab.txt``, ``u:ab@host``; not ``jobab``), since a short value replaced inside
  words would make every text unreadable (``a`` in every word) and would hide nothing more;
- in any URI (``scheme://...``), the password of its user info, also with an empty user name
  (``https://:pw@host``), an ``@`` in the user name, an IPv6 host or a port, a password written raw
  with ``/``, ``?`` or ``#`` in it (as SQLAlchemy takes it: ``postgresql://bob:p/w@db/x``), and the value of any
  query or fragment parameter named like a secret (``?token=``, ``&password=``, ``X-Amz-Signature=``).

Every logging helper of ``pipeline.tracking`` calls :func:`scrub` on what it writes as config or
record (names, params, tags, config artifacts); data (a vocabulary, labels, texts) is written as it
is (:func:`pipeline.tracking.log.log_data`).
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from typing import Any, Iterable, Optional, Pattern, Tuple

#: What a secret is written as.
MARK = "***"
#: A secret this long or longer is replaced wherever it occurs, also inside a word.
WHOLE_LENGTH = 8
#: Environment variables whose values never reach the store: the keyword not followed by another
#: letter (``HF_TOKEN``, ``PGPASSWORD``, ``AWS_SECRET_ACCESS_KEY``, ``MY_API_KEY2``; not
#: ``TOKENIZERS_PARALLELISM``, whose ``false`` would otherwise be scrubbed from every config).
SECRET_NAME = re.compile(
    r"(passw(or)?d|secret(_?key)?|token|api_?key|access_?key|credentials?|private_?key)s?(?![a-z])", re.IGNORECASE
)
#: URI query and fragment parameters whose values are secrets: named with one of these words last
#: (``password``, ``sslpassword``, ``access_token``, ``api_key``, ``X-Amz-Signature``; not ``token_type``).
_SECRET_PARAM = re.compile(r"(passw(or)?d|pwd|secret|token|key|credentials?|signature|sig|auth(orization)?)s?$", re.IGNORECASE)
#: A URI in a text: a scheme, ``://``, then anything up to white space or a quote.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]*")


def _redact_params(part: str) -> str:
    """``a=1&token=x;b=2`` -> ``a=1&token=***;b=2`` (a query or a fragment), the rest as written."""
    pieces = re.split(r"([&;])", part)
    for i in range(0, len(pieces), 2):
        name, eq, value = pieces[i].partition("=")
        if eq and value and value != MARK and _SECRET_PARAM.search(urllib.parse.unquote_plus(name)):
            pieces[i] = f"{name}={MARK}"
    return "".join(pieces)


#: The user info as SQLAlchemy reads it, which takes a password written raw, ``/``, ``?`` or ``#``
#: included (``postgresql://bob:p/w@db:5432/mlflow``): a user without ``:``, ``/`` or ``@``, the
#: password up to the next ``@``, then a host (a name, an address, ``[IPv6]``) and a port, and the
#: end of the authority (or of the URI in a sentence: ``...5432/db: refused``).
_RAW_USERINFO = re.compile(r"(?P<user>[^:/?#@\[\]]*):(?P<password>[^@/?#]*[/?#][^@]*)@(?=(?:\[[0-9A-Fa-f:.]*\]|[\w.~%-]+)(?::\d*)?(?:[/?#,;)]|:(?!\w)|$))")


def _redact_uri(uri: str) -> str:
    """One URI with its password and secret parameters written ``***``, everything else as written.

    A password written raw with ``/``, ``?`` or ``#`` in it is taken first, as SQLAlchemy reads it
    (:data:`_RAW_USERINFO`); the rest is split by RFC 3986's generic syntax (what ``urllib.parse.urlsplit`` does, without its case
    folding of the scheme and its refusal of a malformed IPv6 host): the authority runs from
    ``//`` to the first ``/``, ``?`` or ``#``; its user info is what precedes its last ``@``, and the
    password is that user info after its first ``:``.
    """
    scheme, _, rest = uri.partition("://")
    raw = _RAW_USERINFO.match(rest)
    if raw and raw.group("password") != MARK:  # a raw password holding a character that would end the authority
        rest = f"{raw.group('user')}:{MARK}@{rest[raw.end():]}"
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if at and colon and password and password != MARK:
        authority = f"{user}:{MARK}@{host}"
    path_query, hash_, fragment = tail.partition("#")
    path, question, query = path_query.partition("?")
    return f"{scheme}://{authority}{path}{question}{_redact_params(query)}{hash_}{_redact_params(fragment)}"


def redact(text: str) -> str:
    """``text`` with the password and secret parameters of every URI in it written ``***``
    (for messages and tags: ``http://user:***@host:5000``)."""
    return _URI.sub(lambda m: _redact_uri(m.group(0)), text)


def secrets_from_environment(environ: Optional[dict] = None) -> Tuple[str, ...]:
    """The values to scrub: those of the variables named like secrets, each also percent-encoded
    (as it would stand in a URI); longest first. Empty values and values made of ``*`` only (the
    mark itself) are none."""
    values = {v for k, v in (os.environ if environ is None else environ).items() if SECRET_NAME.search(k)}
    forms = {f for v in values if v.strip("*") for f in (v, urllib.parse.quote(v), urllib.parse.quote(v, safe=""), urllib.parse.quote_plus(v))}
    return tuple(sorted(forms, key=lambda f: (-len(f), f)))


def _occurrence(secret: str) -> str:
    """The regex of a secret's occurrences that :func:`scrub` replaces: anywhere for a long one;
    for a short one, not glued to a letter or digit on a side where it starts or ends with one."""
    body = re.escape(secret)
    if len(secret) >= WHOLE_LENGTH:
        return body
    before = r"(?<![^\W_])" if secret[0].isalnum() else ""
    after = r"(?![^\W_])" if secret[-1].isalnum() else ""
    return before + body + after


@functools.lru_cache(maxsize=64)
def _matcher(secrets: Tuple[str, ...]) -> Optional[Pattern[str]]:
    return re.compile("|".join(_occurrence(s) for s in secrets)) if secrets else None


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of ``secrets`` (as :func:`_occurrence` defines it) and every
    URI password written ``***``, repeated until nothing changes, so that no replacement leaves
    a secret formed by the mark and its neighbours. Ends: every change removes a character that
    is not ``*`` (secrets made of ``*`` only are none), or makes a password of stars ``***``."""
    matcher = _matcher(tuple(secrets))
    while True:
        redacted = redact(text)
        scrubbed = matcher.sub(MARK, redacted) if matcher is not None else redacted
        if scrubbed == redacted == text:  # no password left, and no occurrence (each one changes the text)
            return text
        text = scrubbed


def scrub(value: Any) -> Any:
    """``value`` with every secret written ``***``: the values of environment variables named like
    secrets (also when a config interpolated them) and URI passwords (module docstring). Dicts
    (keys too), lists and tuples recursively; other values as they are."""
    secrets = secrets_from_environment()

    def one(item: Any) -> Any:
        if isinstance(item, dict):
            return {one(k): one(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(one(v) for v in item)
        return scrub_text(item, secrets) if isinstance(item, str) else item

    return one(value)
