"""Training one cell: what a cell's result depends on.

``loop`` is the training loop shared by the runner and the tuner, ``models`` the model
registry, ``budget`` the stopping rule, ``timing`` device time of the steps,
``evaluation`` and ``metrics`` the figures a cell records, ``interference`` signs that
other processes slowed the steps, ``numerics`` the floating-point settings and
``interrupts`` Ctrl-C and SIGTERM only between safe points.
"""
