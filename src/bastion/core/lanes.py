"""Which lane a connection's next request waits in: the front lane, or the back lane.

A login flood from many addresses keeps every request thread busy with password attempts;
in a first-come queue a signed-in page then waits behind all of them (measured: 9 ms idle,
815 ms during the flood). Bastion's gunicorn worker (bastion.serving.worker) keeps two
queues instead: a connection whose last request asked for a password hash or was refused
by a rate limit waits in the back one, behind everyone else's, and may only take part of
the threads. A sign-in that succeeds keeps its connection in front: the user's
next page doesn't wait behind the flood.

The app only marks; the worker decides. This module is the link between them: the worker
calls `begin` before each request on its thread and `end` after it; the app calls
`send_to_back` on its way. Outside that worker (tests, the CLI, another server) the mark is
simply never read.
"""

from __future__ import annotations

import threading


class _RequestMark(threading.local):
    back = False


_mark = _RequestMark()


def begin() -> None:
    """A request starts on this thread: its connection is in the front lane until marked."""
    _mark.back = False


def send_to_back() -> None:
    """Queue this connection's next request in the back lane."""
    _mark.back = True


def keep_in_front() -> None:
    """Undo `send_to_back` for this request (a password that proved right)."""
    _mark.back = False


def end() -> bool:
    """The request on this thread is done: whether its connection goes to the back lane."""
    back = _mark.back
    _mark.back = False
    return back
