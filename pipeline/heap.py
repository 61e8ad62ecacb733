"""A command's long-lived objects, left out of Python's full garbage collections while it runs.

Keras's ``clear_session`` and Keras Tuner's ``Tuner._try_build`` each run a full ``gc.collect()``
before every model: about four a trial and one or two a fit. A full collection walks every object
the process holds, and after TensorFlow's, Keras's, MLflow's and pandas's imports that is over half
a million objects, 0.25-0.4 s on a 2-core machine each time: a quarter of a small search's time went
to collections that found nothing of TensorFlow's to free (``bench/gc_freeze.py``).

``gc.freeze()`` (Python's documented way to do this) moves the objects alive just before a
command's first model is built to a permanent generation that collections skip; collections then
walk only what the command made since (the models, the trials, the runs) and free it as before.
The command's own garbage made before that point is collected once, not frozen. When the command
ends, however it ends, :func:`gc.unfreeze` gives them back: a process that runs a command in itself
(a notebook, the tests) gets its collector back as it was. Only the command line does this
(``pipeline.cli``: its ``main``, and the job Hydra's launcher runs, which in a process of its own,
a submitit job's, is the outermost command); a program that calls ``pipeline.train.run`` itself keeps Python's collector as
it set it, and one that froze objects of its own is left alone.

Until that point the collector is off: importing TensorFlow and Keras makes those half a million
objects, and Python's automatic full collections, each at a quarter more objects than the last,
walked them about a dozen times, over a second of every command's start. The one collection before
the freeze frees whatever cyclic garbage the start made; a command that builds no model (``compare``,
a refused one) runs without the collector to its end, a few seconds at most, and ``predict``
freezes once its model is loaded.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator

#: False leaves every collection as Python makes it (``bench/gc_freeze.py`` compares the two).
ENABLED = True

_open = 0  # commands running (one, unless a command runs another)
_active = False  # whether the outermost command found the collector as Python sets it (on, nothing frozen) and turned it off
_frozen = False  # whether this module froze the objects that gc.get_freeze_count() counts (and turned the collector on again)


@contextmanager
def command() -> Iterator[None]:
    """The span of one command: the collector off until :func:`freeze`; what that froze is thawed,
    and the collector on again, when it ends. A process that turned its collector off or froze
    objects itself is left as it is."""
    global _open, _active, _frozen
    try:
        _open += 1
        if _open == 1:
            _active = ENABLED and gc.isenabled() and not gc.get_freeze_count()
            if _active:
                gc.disable()
        yield
    finally:
        _open = max(0, _open - 1)  # (a signal before the count went up must not leave it below)
        if _open == 0 and _active:
            if _frozen:
                gc.unfreeze()
            else:  # still off since the command started: no model was built
                gc.enable()
            _active = _frozen = False


def freeze() -> None:
    """Freeze the objects alive now, once per command: called as a model is about to be built
    (``pipeline.experiment.seed_everything``), when TensorFlow and Keras have been imported. Outside
    a command, or where the process turned its collector off or froze objects itself, nothing is
    done."""
    global _frozen
    if not _active or _frozen or gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()
    _frozen = True
    gc.enable()  # off since the command started (it was on: _active)
