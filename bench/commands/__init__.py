"""One module per ``python -m bench`` command: ``configure(parser)`` and ``run(args)``."""
