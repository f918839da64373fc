"""Start a child process that Ctrl-C (SIGINT) reaches, however pytest itself was started.

A job that a non-interactive shell puts in the background (`cmd &`) runs with SIGINT ignored, and children
inherit an ignored signal across exec; Python then installs no KeyboardInterrupt handler, so a test that
sends SIGINT would see the child carry on. Restoring the default disposition before exec makes such tests
independent of how the suite was launched."""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_interruptible(args: list[str], **kwargs: Any) -> subprocess.Popen:
    return subprocess.Popen(args, preexec_fn=_default_sigint, **kwargs)
