"""Certification engine: settings, the engine and its builder, result files, metrics, loggers.

Flow: settings -> build (build.py) -> engine (engine.py; the loop and the statistical tests are ddsx.smoothing.loop and ddsx.smoothing.procedures) -> result file
(result_file.py) -> metrics (metrics.py) -> progress (ddsx/progress.py), loggers (ddsx/loggers/certification.py). The callback lives in
``ddsx.certification.callback`` (import it from there; it pulls in Lightning). This package never
imports ``ddsx.report``.
"""

from ddsx.certification.build import ClassifierSpec, build_certifier, tuned_to
from ddsx.certification.engine import Certifier, Target
from ddsx.certification.metrics import Tally, certified_accuracy, format_summary, metric_names, summarize
from ddsx.certification.result_file import (
    COLUMNS,
    ResultFile,
    ResultFileError,
    ResultFileLockedError,
    ResultRow,
    SettingsMismatchError,
    module_fingerprint,
    read_results,
    run_identity,
    sidecar_path,
)
from ddsx.certification.settings import DEFAULT_RADII, CertifySettings, InvalidSettingError

__all__ = [
    "COLUMNS",
    "DEFAULT_RADII",
    "Certifier",
    "CertifySettings",
    "ClassifierSpec",
    "InvalidSettingError",
    "ResultFile",
    "ResultFileError",
    "ResultFileLockedError",
    "ResultRow",
    "SettingsMismatchError",
    "Tally",
    "Target",
    "build_certifier",
    "certified_accuracy",
    "format_summary",
    "metric_names",
    "module_fingerprint",
    "read_results",
    "run_identity",
    "sidecar_path",
    "summarize",
    "tuned_to",
]
