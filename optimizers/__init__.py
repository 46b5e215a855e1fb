"""bSQH and its baselines behind one contract: ``step(x, y) -> StepStats``.

``make(name, model, **hparams)`` builds any registered method; ``available()`` lists them.
This package knows nothing of the benchmark suite (``bench``) that drives it. Methods
register on first look-up: the built-in modules (``registry.BUILTIN``) and those other
packages name in the entry-point group ``pmp_bench.methods`` (see ``optimizers.registry``).
"""

from .baselines import AdamHParams, SGDHParams
from .bsqh import BSQH, BSQHHParams, FastBSQH, FastBSQHHParams
from .graphs import GraphedStep, graphed_variant
from .hparams import HParams, HParamSpec, hparam
from .registry import (
    Method,
    Traits,
    algorithm,
    available,
    effective_hparams,
    hparams_class,
    hyperparameters,
    load_methods,
    make,
    register,
    runtime_options,
    traits,
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
from .search import Search, choice, fixed, log_uniform, uniform
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
    "Search",
    "StepStats",
    "Traits",
    "algorithm",
    "available",
    "choice",
    "effective_hparams",
    "fixed",
    "graphed_variant",
    "hparam",
    "hparams_class",
    "hyperparameters",
    "layer_sparsity",
    "load_methods",
    "log_uniform",
    "make",
    "make_regularizer",
    "nonzeros",
    "prunable_count",
    "prunable_parameters",
    "register",
    "runtime_options",
    "sparsity",
    "traits",
    "uniform",
    "variant_label",
]
