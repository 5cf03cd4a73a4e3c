"""Socket writes that fail with EPIPE instead of killing the CLI with SIGPIPE.

The CLIs restore SIGPIPE's default action so that a closed stdout ends them
quietly, as Go programs end. Go only does that for stdout/stderr, though: a
write to a socket the server already closed returns an error. That happens
with TLS 1.3 when a server refuses our certificate (or its absence) after the
handshake completed on our side: the request's write then meets a closed
connection. :func:`no_sigpipe` blocks SIGPIPE in the calling thread around such
writes (the kernel then returns EPIPE) and discards a SIGPIPE raised meanwhile.
"""
from __future__ import annotations

import contextlib
import signal

_PIPE = {signal.SIGPIPE}


@contextlib.contextmanager
def no_sigpipe():
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _PIPE)
    try:
        yield
    finally:
        if signal.SIGPIPE not in old:
            try:
                while signal.sigtimedwait(_PIPE, 0) is not None:
                    pass
            except OSError:
                pass
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
