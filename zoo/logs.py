"""Keeps TensorFlow's own log lines (start-up, C++ warnings) off the user's terminal unless asked for.

`export.edge.runtime` holds the same two functions for the board side, which imports nothing of `zoo`.
"""

import contextlib
import os
import sys

VERBOSE_ENV = "AEZOO_VERBOSE"


def logs_wanted():
    """Whether the user asked for the libraries' own log lines: AEZOO_VERBOSE=1 (`aezoo --verbose`),
    or a TF_CPP_MIN_LOG_LEVEL of their own below 3."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0") or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3"


@contextlib.contextmanager
def native_logs_hidden():
    """Sends file descriptor 2 to /dev/null inside the block unless `logs_wanted()`.

    TensorFlow's C++ start-up lines (absl's preamble, CUDA probing, CPU features) go straight to
    fd 2, some of them whatever TF_CPP_MIN_LOG_LEVEL says. Exceptions raised inside still reach
    the user: they are printed after the block, when stderr is back.
    """
    if logs_wanted():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
