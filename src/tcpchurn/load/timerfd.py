"""A ``timerfd`` (via ctypes: Python 3.11 has no ``os.timerfd_create``) for sub-ms wake-ups.

Why: ``epoll.poll(timeout)`` rounds its timeout *up* to whole milliseconds
(``_PyTime_ROUND_CEILING`` in ``selectmodule.c``), so a loop that sleeps with it starts
connections up to 1 ms late — exactly the threshold at which tcpchurn calls a connection
``late``.  A timerfd armed at an absolute ``CLOCK_MONOTONIC`` time (the clock behind
``time.monotonic()``) wakes the same ``epoll_wait`` with nanosecond resolution
(timerfd_create(2); the default 50 µs timer slack still applies).
"""

from __future__ import annotations

import ctypes
import os

from tcpchurn.libc import libc

CLOCK_MONOTONIC = 1  # include/uapi/linux/time.h
TFD_TIMER_ABSTIME = 1  # include/uapi/linux/timerfd.h
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = libc()
_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [
    ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p,
]


class Timer:
    """One-shot absolute-time timer whose fd becomes readable when it expires."""

    def __init__(self) -> None:
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd
        self.armed_at = -1.0
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)

    def arm(self, when: float) -> None:
        """Expire at ``when`` (a ``time.monotonic()`` value); re-arming replaces it."""
        if when == self.armed_at:
            return
        sec = int(when)
        nsec = int((when - sec) * 1e9)
        if sec <= 0 and nsec <= 0:
            nsec = 1  # an all-zero it_value would disarm the timer
        value = self._spec.it_value
        value.tv_sec = sec
        value.tv_nsec = nsec
        # timerfd_settime also clears the expiration count (fs/timerfd.c timerfd_setup)
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.armed_at = when

    def clear(self) -> None:
        """Consume an expiry (the fd stays readable until read or re-armed)."""
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass
        self.armed_at = -1.0

    def close(self) -> None:
        """Release the fd."""
        os.close(self.fd)
