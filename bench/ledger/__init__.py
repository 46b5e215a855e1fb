"""The output folder as the source of truth: one JSON record per cell and what keeps it whole.

``records`` reads and writes the cell records, ``identity`` derives a cell's configuration
and key (``import_closure`` the code version in it), ``checkpoints`` the state of a cell in
training, ``cell_claims`` which driver trains a cell, ``locking`` owner files and short
locks, ``safe_files`` writes that a crash never leaves half done and ``writable`` the
up-front check that a folder can be written.
"""
