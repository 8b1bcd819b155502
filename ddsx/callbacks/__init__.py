"""Lightning callbacks of ddsx's own (certification's callback lives with the certification engine;
the training progress callback with all progress reporting, in ddsx/progress.py)."""

from ddsx.progress import ProgressLog

__all__ = ["ProgressLog"]
