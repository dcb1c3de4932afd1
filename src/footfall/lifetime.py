"""Child processes that must not outlive their parent."""

from __future__ import annotations

import os
import signal
import threading
import time


def exit_with_parent(parent: int, *, by_signal: bool = True) -> None:
    """End this process when ``parent`` ends, even by SIGKILL: the store
    process must never outlive the server that started it, nor an unpack
    helper the store process.

    ``by_signal`` asks the kernel for a SIGKILL when the parent goes. That
    signal follows the *thread* that started this process, so a process started
    from a thread that may end before its parent does watches instead.
    """
    armed = by_signal and _arm_death_signal()
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="footfall-parent-watch", daemon=True).start()


def _arm_death_signal() -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        armed: bool = libc.prctl(1, signal.SIGKILL) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False  # not Linux: watch instead
    return armed
