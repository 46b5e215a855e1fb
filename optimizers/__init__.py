"""bSQH and its baselines behind one contract: ``step(x, y) -> StepStats``.

``make(name, model, **hparams)`` builds any registered method; ``available()`` lists them.
This package knows nothing of the benchmark suite (``bench``) that drives it.
"""

from . import baselines as _baselines  # noqa: F401  (registers the baselines and *-graph)
from . import emsa as _emsa  # noqa: F401  (registers emsa and emsa-l0)
from . import gmp as _gmp  # noqa: F401  (registers gmp)
from . import l0hc as _l0hc  # noqa: F401  (registers l0-hc)
from .baselines import AdamHParams, SGDHParams
from .bsqh import BSQH, BSQHHParams, FastBSQH, FastBSQHHParams
from .graphs import GraphedStep, graphed_variant
from .hparams import HParams, HParamSpec, hparam
from .registry import (
    Method,
    algorithm,
    available,
    effective_hparams,
    hparams_class,
    hyperparameters,
    make,
    register,
    runtime_options,
    variant_label,
)
from .regularizers import (
    L0L2,
    L1L2,
    Regularizer,
    layer_sparsity,
    make_regularizer,
    nonzeros,
    prunable_count,
    prunable_parameters,
    sparsity,
)
from .stats import StepStats

__all__ = [
    "BSQH",
    "L0L2",
    "L1L2",
    "AdamHParams",
    "BSQHHParams",
    "FastBSQH",
    "FastBSQHHParams",
    "GraphedStep",
    "HParamSpec",
    "HParams",
    "Method",
    "Regularizer",
    "SGDHParams",
    "StepStats",
    "algorithm",
    "available",
    "effective_hparams",
    "graphed_variant",
    "hparam",
    "hparams_class",
    "hyperparameters",
    "layer_sparsity",
    "make",
    "make_regularizer",
    "nonzeros",
    "prunable_count",
    "prunable_parameters",
    "register",
    "runtime_options",
    "sparsity",
    "variant_label",
]
