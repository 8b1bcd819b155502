"""Certification engine: settings, resumable result files, the dataset loop, metrics, the callback.

The callback lives in ``ddsx.certification.callback`` (import it from there; it pulls in Lightning).
"""

from ddsx.certification.engine import certify_dataset, certify_example
from ddsx.certification.identity import module_fingerprint, run_identity
from ddsx.certification.metrics import certified_accuracy, metric_names, summarize
from ddsx.certification.results_file import COLUMNS, ResultFileError, ResultRow, read_results
from ddsx.certification.settings import DEFAULT_RADII, CertifySettings, InvalidSettingError
from ddsx.certification.store import ResultStore, SettingsMismatchError, sidecar_path

__all__ = [
    "COLUMNS",
    "DEFAULT_RADII",
    "CertifySettings",
    "InvalidSettingError",
    "ResultFileError",
    "ResultRow",
    "ResultStore",
    "SettingsMismatchError",
    "certified_accuracy",
    "certify_dataset",
    "certify_example",
    "metric_names",
    "module_fingerprint",
    "read_results",
    "run_identity",
    "sidecar_path",
    "summarize",
]
