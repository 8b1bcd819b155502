"""Lightning callbacks of ddsx's own (certification's callback lives with the certification engine)."""

from ddsx.callbacks.progress_log import ProgressLog

__all__ = ["ProgressLog"]
