"""Name -> method registry shared by the suite, the tuner and the perf harness.

A method describes itself in its own module: ``@register(name, hparams=..., **traits)``
on its class. Its hyperparameter dataclass (``optimizers.hparams``) carries defaults,
bounds and search spaces; its runtime options (keyword arguments that change how a step
is computed, never what: ``chunk_size``, ``loss_fn``, ``post_step_loss``, ``cuda_graph``)
are read from its constructor's keyword-only parameters, following ``**kwargs`` up the
class hierarchy; its :class:`Traits` say what the benchmark needs to know about it
(which R its J prices, whether its step applies R, whether it is the method under
study, its colour), so nothing outside the method decides what it is from its name.
``make(name, model, **kwargs)`` sorts the keywords into the two, so callers keep one
flat call while the registry, suites, search spaces and logs read the dataclass alone.

Registration is explicit: the built-in methods are the modules in :data:`BUILTIN`, and a
package outside this repository adds methods through the entry-point group
``pmp_bench.methods`` (:data:`ENTRY_POINT_GROUP`): each entry point names a module whose
import registers its methods. Both are loaded on the first look-up, so importing
``optimizers`` stays cheap and a plugin may itself import ``optimizers``.

What a name means is decided here, once. Two kinds of derived names exist:

* an *execution variant* (``same_as``): the same algorithm and iterates, run differently
  (``<method>-graph``, ``bsqh-fast``); it is reported, tuned and compared as its method;
* a *labelled variant* (``variant_of`` with a ``label``): a different algorithm derived
  from a method (our E-MSA + L0 prox hybrid ``emsa-l0``, the parallel-sweep ablation
  ``bsqh-parallel``); it keeps its own name everywhere and never stands for its method.

``pinned`` values are hyperparameters a name fixes (``bsqh`` is the sequential sweep,
``bsqh-parallel`` the parallel one): passing another value is an error naming the
registered name that runs it. :func:`algorithm` is what the suite, the tuner and the
report ask when they need to know which method a name runs.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

from .hparams import HParams
from .stats import StepStats


class Method(Protocol):
    """The contract of every training method: it owns its forward and backward passes."""

    model: nn.Module
    hp: HParams  # the hyperparameters it was built with (frozen)

    def step(self, x: Tensor, y: Tensor) -> StepStats: ...

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond the model's parameters that the next step depends on."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` (load the model's parameters first)."""
        ...

    def objective(self, x: Tensor, y: Tensor) -> Tensor:
        """J = mean loss + R at the current parameters, without building a graph."""
        ...


#: Sparsity terms of R a method's J can price (``Traits.penalty``).
PENALTIES = ("l0", "l1", "l0-gates")


@dataclass(frozen=True)
class Traits:
    """What the benchmark needs to know about a method, declared where it is registered.

    ``penalty``: the sparsity term of the R in the J it reports (``l0``, ``l1``, or
    ``l0-gates``, the expected count of open hard-concrete gates); a ``penalty``
    hyperparameter, where the method has one, takes precedence. ``applies_penalty``: its
    step applies R (False: beta and gamma only price the J it reports, so the tuner
    searches none of R's weights). ``focus``: it is the method this benchmark studies
    (bSQH): the report's descent claim and the matched study's pairwise focus and default
    reference apply to it. ``colour``: ``#rrggbb`` of its runs in MLflow's table.
    An execution variant inherits its method's traits; a labelled variant declares its own.
    """

    penalty: str | None = "l0"
    applies_penalty: bool = True
    focus: bool = False
    colour: str | None = None

    def __post_init__(self) -> None:
        if self.penalty is not None and self.penalty not in PENALTIES:
            raise ValueError(
                f"penalty must be one of {list(PENALTIES)} or None, got {self.penalty!r}"
            )
        colour = self.colour
        if colour is not None and not (
            len(colour) == 7
            and colour[0] == "#"
            and all(c in "0123456789abcdef" for c in colour[1:])
        ):
            raise ValueError(f"colour must be '#rrggbb' (lower-case hex), got {colour!r}")


@dataclass(frozen=True)
class Entry:
    """One registered method: its class, hyperparameter dataclass and runtime options."""

    name: str
    cls: type
    hparams: type[HParams]
    runtime: tuple[str, ...]
    same_as: str | None = None  # execution variant of that method (same iterates)
    variant_of: str | None = None  # labelled variant (another algorithm) of that method
    label: str = ""  # what a labelled variant is, e.g. "ablation: ..."
    pinned: tuple[tuple[str, Any], ...] = ()  # hyperparameters this name fixes
    traits: Traits = field(default_factory=Traits)


_METHODS: dict[str, Entry] = {}
T = TypeVar("T", bound=type)

#: Modules whose import registers the built-in methods.
BUILTIN = (
    "optimizers.baselines",
    "optimizers.bsqh",
    "optimizers.emsa",
    "optimizers.gmp",
    "optimizers.l0hc",
)
#: Entry-point group through which other packages register methods.
ENTRY_POINT_GROUP = "pmp_bench.methods"
_LOADED: set[str] = set()


class PluginError(ImportError):
    """A method module named by an entry point could not be imported."""


def load_methods() -> None:
    """Import the built-in method modules and every ``pmp_bench.methods`` entry point.

    Idempotent: a module already loaded is skipped, so calling it again after installing a
    package (or adding its metadata to ``sys.path``) registers only the new methods.
    """
    for module in BUILTIN:
        if module not in _LOADED:
            _LOADED.add(module)
            importlib.import_module(module)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        key = f"{point.name}={point.value}"
        if key in _LOADED:
            continue
        try:
            point.load()
        except Exception as error:  # named, and tried again by the next explicit call
            raise PluginError(
                f"method plugin {point.name!r} ({point.value}, entry-point group "
                f"{ENTRY_POINT_GROUP!r}) failed to load: {type(error).__name__}: {error}"
            ) from error
        _LOADED.add(key)


def _methods() -> dict[str, Entry]:
    """The registry, loading the built-in and plugin methods on first use."""
    if not _LOADED:
        load_methods()
    return _METHODS


def register(
    name: str,
    *,
    hparams: type[HParams],
    same_as: str | None = None,
    variant_of: str | None = None,
    label: str = "",
    pinned: dict[str, Any] | None = None,
    **traits: Any,
) -> Callable[[T], T]:
    """Class decorator: make the class available to ``make(name, ...)``.

    The class is built as ``cls(model, hparams_instance, **runtime)``, or, like a
    ``torch.optim`` optimizer, as ``cls(model, lr=0.1, **runtime)``: the registry wraps the
    constructor so that hyperparameter keywords build the (validated) dataclass. One
    dataclass may serve several names (a method and its graphed variant); its label is the
    first name. ``same_as``, ``variant_of``, ``label`` and ``pinned``: see the module
    docstring; a labelled variant needs its label. ``traits``: the fields of
    :class:`Traits`; an execution variant starts from its method's. The runtime options
    are the constructor's keyword-only parameters (:func:`constructor_options`).
    """
    if same_as is not None and variant_of is not None:
        raise ValueError(f"{name!r}: an execution variant cannot also be a labelled variant")
    if variant_of is not None and not label:
        raise ValueError(f"{name!r}: a labelled variant of {variant_of!r} needs its label")
    for base in (same_as, variant_of):
        if base is not None and base not in _METHODS:
            raise ValueError(f"{name!r}: {base!r} must be registered before its variants")
    fixed = dict(pinned or {})
    unknown = sorted(set(fixed) - set(hparams.names()))
    if unknown:
        raise ValueError(f"{name!r}: pinned {unknown} are not hyperparameters")
    try:
        declared = replace(_METHODS[same_as].traits, **traits) if same_as else Traits(**traits)
    except TypeError:
        allowed = ", ".join(f.name for f in Traits.__dataclass_fields__.values())
        raise TypeError(
            f"{name!r}: unknown register() keyword(s) {sorted(traits)}; traits: {allowed}"
        ) from None

    def add(cls: T) -> T:
        if name in _METHODS:
            raise ValueError(f"optimizer name {name!r} is registered twice")
        runtime = constructor_options(cls)
        clash = sorted(set(runtime) & set(hparams.names()))
        if clash:
            raise ValueError(f"{name!r}: {clash} cannot be both hyperparameter and runtime option")
        if not vars(hparams).get("method"):
            hparams.method = name
        found = Entry(
            name, cls, hparams, runtime, same_as, variant_of, label, tuple(fixed.items()), declared
        )
        _METHODS[name] = found
        setattr(cls, "method_name", name)  # noqa: B010  (any class, whatever it declares)
        init = vars(cls).get("__init__") or getattr(cls, "__init__")  # noqa: B009
        setattr(cls, "__init__", _keyword_constructor(init, found))  # noqa: B010
        return cls

    return add


def constructor_options(cls: type) -> tuple[str, ...]:
    """The runtime options of ``cls``: keyword-only parameters of its constructors.

    Read as ``register_model`` reads a model's options, so they are written once, in the
    signature. A constructor that passes ``**kwargs`` on adds its superclass's options
    (which come first, in the order the base declares them); one without stops the walk.
    """
    groups: list[list[str]] = []
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        params = inspect.signature(inspect.unwrap(init)).parameters.values()
        groups.append([p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY])
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    ordered = [name for group in reversed(groups) for name in group]
    return tuple(dict.fromkeys(ordered))


def available() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_methods())


def description(name: str) -> str:
    """The first line of the method's class docstring: what ``bench list`` shows.

    A labelled variant's label comes first, so no listing can show it without it.
    """
    found = entry(name)
    text = _first_line(found.cls.__doc__)
    return f"[{found.label}] {text}" if found.label else text


def algorithm(name: str) -> str:
    """The registered method whose algorithm ``name`` runs.

    An execution variant (``sgd-graph``, ``bsqh-fast``) runs its method's algorithm; a
    labelled variant (``emsa-l0``, ``bsqh-parallel``) and every method run their own.
    A name that is not registered (a record of a method since removed) is returned as it
    is, so readers of old records never fail on it.
    """
    found = _methods().get(name)
    while found is not None and found.same_as is not None:
        found = _METHODS[found.same_as]
    return found.name if found is not None else name


def variant_label(name: str) -> str:
    """What a labelled variant is (its algorithm's label), or "" for a method itself."""
    found = _METHODS.get(algorithm(name))
    return found.label if found is not None else ""


def traits(name: str) -> Traits:
    """What ``name`` declared about itself; a name not registered (a record of a method
    since removed) gets the defaults, so readers of old records never fail on it."""
    found = _methods().get(name)
    return found.traits if found is not None else Traits()


def pinned(name: str) -> dict[str, Any]:
    """The hyperparameters ``name`` fixes (empty for most methods)."""
    return dict(entry(name).pinned)


def _first_line(doc: str | None) -> str:
    lines = [line.strip() for line in (doc or "").strip().splitlines()]
    return lines[0] if lines else ""


def entry(name: str) -> Entry:
    """The registry entry of ``name``; unknown names raise ValueError listing the known."""
    if name not in _methods():
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return _METHODS[name]


def registered(name: str) -> Entry:
    """The entry of ``name`` without loading other modules (for registration code)."""
    if name not in _METHODS:
        raise ValueError(f"{name!r} must be registered before it is referred to")
    return _METHODS[name]


def hparams_class(name: str) -> type[HParams]:
    """The hyperparameter dataclass of method ``name``."""
    return entry(name).hparams


def runtime_options(name: str) -> tuple[str, ...]:
    """Keyword options of ``name`` that are not hyperparameters."""
    return entry(name).runtime


def hyperparameters(name: str) -> dict[str, Any]:
    """Hyperparameters of a method with their defaults (for search spaces and logs)."""
    return {k: default for k, (default, _) in entry(name).hparams.specs().items()}


def effective_hparams(name: str, **values: Any) -> dict[str, Any]:
    """Every hyperparameter of ``name`` with its effective value, defaults included."""
    return _hparams(entry(name), values).as_dict()


def make(name: str, model: nn.Module, **kwargs: Any) -> Method:
    """Build method ``name`` for ``model``; unknown names or keywords raise ValueError."""
    found = entry(name)
    runtime = {k: v for k, v in kwargs.items() if k in found.runtime}
    values = {k: v for k, v in kwargs.items() if k not in found.runtime}
    method: Method = found.cls(model, _hparams(found, values), **runtime)
    return method


def _keyword_constructor(init: Callable[..., None], found: Entry) -> Callable[..., None]:
    """``init`` that also takes the hyperparameters as keywords (torch.optim's style).

    Keywords that name a hyperparameter build ``found.hparams``; the runtime options pass
    through. Giving both a dataclass and hyperparameter keywords is ambiguous, so it is an
    error naming both; unknown keywords are named with the allowed ones.
    """

    @functools.wraps(init)
    def __init__(self: Any, model: nn.Module, hp: HParams | None = None, **kwargs: Any) -> None:
        values = {k: v for k, v in kwargs.items() if k not in found.runtime}
        if values:
            if hp is not None and set(values) <= set(found.hparams.names()):
                raise ValueError(
                    f"{found.name}: give the hyperparameters either as a "
                    f"{type(hp).__name__} or as keywords, not both "
                    f"(got {type(hp).__name__} and {', '.join(sorted(values))})"
                )
            hp = _hparams(found, values)
        runtime = {k: v for k, v in kwargs.items() if k in found.runtime}
        init(self, model, hp, **runtime)

    return __init__


def _hparams(found: Entry, values: dict[str, Any]) -> HParams:
    """The method's dataclass built from ``values``; unknown names are named with the method.

    A value that contradicts one the name pins is refused, naming the registered method
    that runs it (``bsqh`` with ``sweep="parallel"`` points to ``bsqh-parallel``).
    """
    unknown = sorted(set(values) - set(found.hparams.names()))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for optimizer {found.name!r}; "
            f"allowed: {', '.join(sorted(found.hparams.names()))}"
            + (f" (runtime options: {', '.join(found.runtime)})" if found.runtime else "")
        )
    hp = found.hparams(**{**values, **dict(found.pinned)})
    for key, fixed in found.pinned:
        if key in values and found.hparams(**{**values, key: values[key]}).as_dict()[key] != fixed:
            runs = [e.name for e in _METHODS.values() if (key, values[key]) in e.pinned]
            where = f"; {key}={values[key]!r} is method {runs[0]!r}" if runs else ""
            raise ValueError(
                f"optimizer {found.name!r} runs {key}={fixed!r} (fixed by its name), "
                f"got {key}={values[key]!r}{where}"
            )
    return hp
