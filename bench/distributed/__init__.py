"""Scale-out on Dask distributed: suites' cells and studies' trials on many workers.

``--scheduler SPEC`` (:mod:`bench.distributed.spec`) picks the cluster
(:mod:`bench.distributed.cluster`); :mod:`bench.distributed.cells` is what a worker runs
for one cell, :mod:`bench.distributed.suite` the driver that submits the cells and writes
the ledger, :mod:`bench.distributed.recording` how the driver turns a worker's result
into a record and an MLflow run, and :mod:`bench.distributed.trials` the tuner's side.
Without ``--scheduler`` none of this is imported and everything runs as before.
"""
