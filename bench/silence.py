"""One way to hush the warnings a call is known to raise, for the length of a block.

Why not a global filter: a module-level ``warnings.filterwarnings`` changes every
caller's process (tests included) from the moment it is imported; a block names the
call whose warning is understood and leaves everything else audible.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def silenced(*categories: type[Warning]) -> Iterator[None]:
    """Ignore warnings of ``categories`` inside the block (every warning if none given)."""
    with warnings.catch_warnings():
        for category in categories or (Warning,):
            warnings.simplefilter("ignore", category)
        yield
