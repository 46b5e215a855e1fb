"""Everything MLflow: the ledger's records shown as experiments and runs.

MLflow is a sink, never the source of truth (that is :mod:`bench.ledger`). ``client``
opens the store and logs with explicit run ids, ``run_log`` one run's lifecycle and its
failures, ``meta`` what MLflow's UI reads beyond params and metrics, ``sync`` a record
as a run (opened, closed, rebuilt), ``report_run`` the report as a run, ``colours`` a
fixed colour per method and ``relocate`` moving an output folder with its store.
"""
