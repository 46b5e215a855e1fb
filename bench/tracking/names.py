"""Every MLflow tag and param name the bench writes or searches for, defined once.

Why one module: a tag is written by one module and read back by others (the orphan
sweeps search by ``suite``/``study``/``cell_key``, ``bench sync`` checks
``pmp.complete``, the report run is found by ``pmp.report_dir``), and users filter on
them in the UI (``tags.run_kind = 'cell'``). A name spelled in two places drifts; here
each is a constant, and the docs' MLflow page lists the same names.

Params are a cell's configuration (or a tuning plan's fields) under their own names;
only the params added beside them are named here. Three groups of tags: names MLflow's
UI reads (``mlflow.*``: kept exactly as MLflow spells them), the bench's own
bookkeeping (``pmp.*``: who drives a run, why it was closed, whether it holds its whole
record), and the columns a user filters on (plain names). Nothing here imports MLflow.
"""

from __future__ import annotations

# --------------------------------------------------------------------- MLflow's own
#: Experiment tag: MLflow 3 opens an experiment in its model-training view with it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: MLflow 3's value for classic training experiments (its UI opens them in that view).
EXPERIMENT_KIND = "custom_model_development"
#: The description shown above a run (and, as an experiment tag, above the run table).
NOTE_TAG = "mlflow.note.content"
#: Where a dataset input was used (``train``, ``validation``, ``test``).
CONTEXT_TAG = "mlflow.data.context"
SOURCE_TYPE_TAG = "mlflow.source.type"
SOURCE_NAME_TAG = "mlflow.source.name"
USER_TAG = "mlflow.user"
GIT_COMMIT_TAG = "mlflow.source.git.commit"
#: Nests a run below another in the run table (a tuning trial below its invocation).
PARENT_RUN_TAG = "mlflow.parentRunId"
#: The colour MLflow's run table and charts give a run (``#rrggbb``).
RUN_COLOUR_TAG = "mlflow.runColor"

# ------------------------------------------------------------------ the bench's own
#: The ledger folder a cell's run was written for (several output folders may share
#: one tracking server; a sweep touches only its own ledger's runs).
LEDGER_TAG = "pmp.ledger"
#: Set on a run that ``bench sync`` rebuilt from its ledger record.
REBUILT_TAG = "pmp.rebuilt_from_ledger"
#: The host and process that opened a run, so a later process can tell an orphan.
DRIVER_HOST_TAG = "pmp.driver_host"
DRIVER_PID_TAG = "pmp.driver_pid"
DRIVER_TAGS = (DRIVER_HOST_TAG, DRIVER_PID_TAG)
#: Why a run was ended by someone other than its owner (killed, replaced, incomplete).
CLOSE_REASON_TAG = "pmp.close_reason"
#: Set when a run holds everything its record has (so ``bench sync`` leaves it alone).
COMPLETE_TAG = "pmp.complete"
#: The report run's folder and the digest of its files (an unchanged report is not
#: logged again).
REPORT_DIR_TAG = "pmp.report_dir"
DIGEST_TAG = "pmp.report_digest"

# ------------------------------------------------------------- columns to filter on
#: What a run is: in a suite's experiment a cell or the suite's report, in the tuning
#: experiment a study invocation's parent run or one of its trials.
RUN_KIND_TAG = "run_kind"
CELL_KIND = "cell"
REPORT_KIND = "report"
STUDY_KIND = "study"
TRIAL_KIND = "trial"
#: The tag tuning runs carried before they used ``run_kind`` (read, never written).
LEGACY_KIND_TAG = "kind"
#: The bench's status of a run's cell or trial (finished, diverged, killed, replaced...).
STATUS_TAG = "status"
SUITE_TAG = "suite"
#: A cell's key (also a param): its record is ``cells/<key>.json``.
CELL_KEY_TAG = "cell_key"
SEED_TAG = "seed"
#: A cell's configuration fields that are also tags, each under its own name.
CELL_CONFIG_TAGS = ("label", "method", "model", "dataset", "mode")
INTERFERENCE_TAG = "interference"
#: A resumed cell's run: the step it continued from and how many times it resumed.
RESUMED_FROM_STEP_TAG = "resumed_from_step"
RESUMES_TAG = "resumes"
#: Tuning: the study, a trial's number and its Optuna state, and the study's target.
STUDY_TAG = "study"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.state"
TARGET_LABEL_TAG = "method"
TARGET_METHOD_TAG = "optimizer"
OBJECTIVE_TAG = "objective"
SETTING_TAG = "setting"
#: A finished cell's figures that are not on its curve are tags ``final.<figure>``.
FINAL_PREFIX = "final."

# ---------------------------------------------------------------------------- params
#: Params a cell's run carries beside its configuration: where it ran and its key.
CELL_ENVIRONMENT_PARAMS = ("device_name", "torch", "git_commit")
CELL_KEY_PARAM = CELL_KEY_TAG
