"""One overall deadline for a hook: whatever kzguard does inside a package manager ends in time.

Each command already has its own timeout (:class:`kzguard.root.Runner`), but timeouts add up
and a read can block where no command runs. :func:`overall` bounds the whole hook: an alarm
raises :class:`DeadlineExceeded` in the main thread when it passes (the runner then kills
the command's process group), the hook meets it as it meets any failure of kzguard itself,
through ``on_error``, and says so. :func:`Overall.rearm` moves the deadline once the
configuration (``hook_timeout``) is read, counted from the hook's start.
"""

import time

try:  # the C module: signal.py wraps it in enums, and importing enum costs the hooks 2 ms
    import _signal as signal
except ImportError:  # pragma: no cover - another Python implementation
    import signal  # type: ignore[no-redef]

from kzguard.base.errors import KzguardError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType, TracebackType
    from typing import Optional

DEFAULT_SECONDS = 30.0


class DeadlineExceeded(KzguardError):
    """The hook ran past its overall deadline."""

    name = "deadline"

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"kzguard did not finish within its {seconds:g} s deadline (hook_timeout)")


class Overall:
    """The deadline of one hook run, as a context manager; ``at`` is on time.monotonic()."""

    def __init__(self, seconds: float = DEFAULT_SECONDS):
        self.started = time.monotonic()
        self.seconds = seconds
        self.at = self.started + seconds
        self._armed = False
        self._previous: object = None

    def __enter__(self) -> "Overall":
        # Only the main thread receives the alarm, and only a handler nobody else installed
        # (dnf or an admin's wrapper may use SIGALRM) is taken; otherwise the runner's
        # deadline alone bounds the commands.
        if signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, None):
            try:
                self._previous = signal.signal(signal.SIGALRM, self._expired)
            except ValueError:  # not the main thread: no alarm here
                return self
            self._armed = True
            self._arm()
        return self

    def __exit__(
        self,
        kind: "Optional[type[BaseException]]",
        value: "Optional[BaseException]",
        traceback: "Optional[TracebackType]",
    ) -> None:
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous or signal.SIG_DFL)  # type: ignore[arg-type]
            self._armed = False

    def rearm(self, seconds: float) -> None:
        """A new length, counted from the start (the configuration is read after it)."""
        self.seconds = seconds
        self.at = self.started + seconds
        if self._armed:
            self._arm()

    def left(self) -> float:
        return self.at - time.monotonic()

    def _arm(self) -> None:
        left = self.left()
        if left <= 0:
            raise DeadlineExceeded(self.seconds)
        signal.setitimer(signal.ITIMER_REAL, left)

    def _expired(self, signum: int, frame: "Optional[FrameType]") -> None:
        raise DeadlineExceeded(self.seconds)


def overall(seconds: float = DEFAULT_SECONDS) -> "Overall":
    """The deadline for a hook that starts now."""
    return Overall(seconds)
