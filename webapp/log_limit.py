"""A logging filter that turns floods of the same error into one line with a count.

Each malformed Socket.IO packet made Engine.IO log a full traceback: 1.6 MB of log for
3 KB sent. Malformed input is the client's fault and needs no traceback; how often it
happens is what an operator needs.
"""

from __future__ import annotations

import logging
import time


class RepeatLimiter(logging.Filter):
    """Let through one record per message template and `interval_s`, without its traceback.

    The next record let through for a template says how many were dropped since.
    """

    MAX_KEYS = 1000  # templates remembered; a flood of distinct messages just resets them

    def __init__(self, interval_s: float = 10.0, clock=time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._dropped: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return False
        if len(self._last) >= self.MAX_KEYS:
            self._last.clear()
            self._dropped.clear()
        self._last[key] = now
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            message = f"{message} ({type(error).__name__}: {str(error)[:200]})"
        dropped = self._dropped.pop(key, 0)
        if dropped:
            message = f"{message} [{dropped} more like this in the last {self.interval_s:g} s]"
        record.msg, record.args = message, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def limit_repeats(*logger_names: str, interval_s: float = 10.0) -> RepeatLimiter:
    """Attach one `RepeatLimiter` to each named logger (filters do not apply to child loggers' records)."""
    limiter = RepeatLimiter(interval_s)
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RepeatLimiter) for f in logger.filters):
            logger.addFilter(limiter)
    return limiter
