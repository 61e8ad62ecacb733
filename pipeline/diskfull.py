"""A full disk: a write that failed for want of space, told in one line instead of a traceback.

Owns telling such a failure from any other (:func:`full_disk`) and naming what could not be
written (:func:`writing`). A write fails for want of space with ``ENOSPC`` (no space left on the
device), ``EDQUOT`` (a disk quota used up) or ``EFBIG`` (the file size limit, ``ulimit -f``),
found anywhere in an error's chain, as the libraries raise or word it: Python and h5py as an
``OSError`` with its errno (h5py also in its text), MLflow's SQLite store as
``SQLITE_FULL`` ("database or disk is full"). SQLite reports ``EFBIG`` only as a failed write
(``SQLITE_IOERR_WRITE``, "disk I/O error"): that is a full disk when the store's file has reached
the file size limit, and any other failure otherwise.

A full disk is a temporary failure, as a lost tracking server is: the runs are closed KILLED
(``pipeline.tracking.runs``), the search's state files stay whole, and the command exits with
status 74 (sysexits' EX_IOERR, ``pipeline.cli``; apart from 2, a user mistake, and 75, a lost
tracking server); the same command goes on once there is space.
"""

from __future__ import annotations

import errno
import os
import re
import resource
from contextlib import contextmanager
from typing import Iterable, Iterator, Optional, Tuple

from pipeline.errors import DiskFull

#: How close to the file size limit a file that SQLite could not write must be for the limit to be why.
NEAR_LIMIT = 64 * 1024

_SQLITE_FULL = "SQLITE_FULL"
_H5_ERRNO = re.compile(r"errno = (\d+)")
_H5_FILE = re.compile(r"filename = '([^']*)'")


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error``, its causes and contexts, and the driver errors SQLAlchemy wraps (``.orig``)."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def _size_limit() -> Optional[int]:
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _reason(code: int) -> Tuple[str, str]:
    """Why, in words, and what to do about it."""
    if code == errno.EFBIG:
        limit = _size_limit()
        said = f" of {limit} bytes" if limit is not None else ""
        return f"the file size limit{said} (ulimit -f) was reached", "raise the limit or free the space"
    if code == errno.EDQUOT:
        return "the disk quota is used up", "free some space or raise the quota"
    return "no space left on the device", "free some space"


def _at_size_limit(files: Iterable[str]) -> bool:
    limit = _size_limit()
    if limit is None:
        return False
    for path in files:
        try:
            if os.path.getsize(path) + NEAR_LIMIT >= limit:
                return True
        except OSError:
            continue
    return False


#: Each errno that means "no room", as its message reads (in text that lost the errno).
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def full_disk(error: BaseException, what: Optional[str] = None, store: Optional[str] = None,
              default: str = "a file") -> Optional[DiskFull]:
    """``error`` as a :class:`DiskFull` if a full disk (quota, file size limit) caused it, else None.

    ``what`` names what was being written; without it, the file the error names, else
    ``default``. ``store`` is the SQLite file of the tracking store: a store that could not be
    written is named as such, whatever was being written.
    """
    for e in _chain(error):
        if isinstance(e, DiskFull):
            return e
        code = e.errno if isinstance(e, OSError) and e.errno in FULL_ERRNOS else None
        if code is None:
            found = _H5_ERRNO.search(str(e))
            if found and int(found[1]) in FULL_ERRNOS:
                code = int(found[1])
        if code is None:
            code = next((c for c in FULL_ERRNOS if os.strerror(c) in str(e)), None)
        if code is not None:
            named = getattr(e, "filename", None) or (_H5_FILE.search(str(e)) or [None, None])[1]
            return DiskFull(what or (str(named) if named else default), *_reason(code))
        name = str(getattr(e, "sqlite_errorname", "") or "")
        store_what = f"the MLflow store {store}" if store else "the MLflow store"
        if name == _SQLITE_FULL or "database or disk is full" in str(e):
            return DiskFull(store_what, *_reason(errno.ENOSPC))
        if name.startswith("SQLITE_IOERR") and store and _at_size_limit([store, f"{store}-journal"]):
            return DiskFull(store_what, *_reason(errno.EFBIG))
    return None


@contextmanager
def writing(what: str, store: Optional[str] = None) -> Iterator[None]:
    """A block that writes ``what``: a full disk inside it becomes a :class:`DiskFull` naming it."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        full = full_disk(e, what=what, store=store)
        if full is None:
            raise
        raise full from e
