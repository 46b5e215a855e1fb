"""Everything MLflow: the ledger's records shown as experiments and runs.

MLflow is a sink, never the source of truth (that is :mod:`bench.ledger`). ``client``
holds the store's experiment (opened on first use) and one run's lifecycle and its
failures, ``names`` every tag and param name, ``meta`` what MLflow's UI reads beyond
params and metrics, ``orphans`` the sweep of runs a dead process left RUNNING, ``sync``
a record as a run (opened, closed, rebuilt), ``report_run`` the report as a run,
``colours`` a fixed colour per method and ``relocate`` moving an output folder with its
store.
"""
