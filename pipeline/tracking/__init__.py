"""The only package that talks to MLflow, one module per concern.

- ``store``: which store, its retry policy, the preflight before any data is read, UI links.
- ``resilience``: a server lost mid-run, a resumed search's runs made to agree with its trials, and runs a dead process left open closed.
- ``runs``: :func:`tracked_run`, the one way a run is opened, and always closed.
- ``log``: params, metrics, tags, artifacts and the per-epoch Keras callback, into the active run.
- ``records``: past runs read back as plain values (rerun, compare).
- ``registry``: Model Registry queries.
- ``models``: the raw-text pyfunc model, logged, and found by run id or name.
- ``loading``: loading it back: only this project's models, only from inside their directory.
- ``artifacts``: a saved model uploaded file by file, ``MLmodel`` last, so no half-written model loads.

Secrets are scrubbed from everything written with ``pipeline.redact`` (outside this package, so
that the command line's error lines use it without importing MLflow).

The names below are the API the rest of the pipeline uses (``from pipeline import tracking``).
"""

from pipeline.tracking.log import (
    epoch_logger, log_data, log_datasets, log_dict, log_figure, log_metric_history, log_metrics, log_params, log_skops, log_table, log_text,
    raise_stopped, set_tags,
)
from pipeline.tracking.loading import check_own_model, load_text_model
from pipeline.tracking.models import PYFUNC_MODEL_FILE, log_text_model, logged_model_exists, register_model, resolve_model
from pipeline.tracking.records import RunRecord, attach, experiment_id_by_name, fetch_run, load_artifact, load_table, metric_history, search
from pipeline.redact import redact, scrub
from pipeline.tracking.registry import promote, registered_for, registered_name, search_version, standing
from pipeline.tracking.resilience import (
    close_stale_runs,
    close_trial_runs,
    is_lost,
    lost,
    process_tag,
    reconcile_children,
    retries_spent,
    retry_budget_s,
    wait_for_server,
)
from pipeline.tracking.runs import folder_name, run_exists, tracked_run
from pipeline.tracking.store import check_server, check_store, configure, preflight, store_file, ui_hint
from pipeline.tracking.sweeps import close_sweep, finished_job, jobs_of, open_sweep

__all__ = [
    "PYFUNC_MODEL_FILE", "RunRecord", "attach", "check_own_model", "check_server", "check_store", "close_stale_runs", "close_sweep", "finished_job", "jobs_of", "open_sweep", "close_trial_runs",
    "configure", "epoch_logger", "experiment_id_by_name", "fetch_run", "folder_name", "is_lost", "load_artifact", "load_table",
    "load_text_model", "log_data", "log_datasets", "log_dict", "log_figure", "log_metric_history", "log_metrics", "log_params", "log_skops", "log_table", "log_text", "log_text_model",
    "logged_model_exists", "lost", "metric_history", "preflight", "process_tag", "promote", "raise_stopped", "reconcile_children", "redact", "register_model", "registered_for", "registered_name", "resolve_model",
    "retries_spent", "retry_budget_s", "run_exists", "scrub", "search", "search_version", "set_tags", "standing", "store_file", "tracked_run", "ui_hint",
    "wait_for_server",
]
