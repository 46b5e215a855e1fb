"""A method's description lives on its class and dataclass: options, spaces, traits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

import optimizers
from optimizers import HParams, choice, fixed, hparam, log_uniform
from optimizers.registry import constructor_options


class _Base:
    def __init__(self, model: Any, hp: Any = None, *, chunk_size: int | None = None) -> None:
        pass


class _Passes(_Base):
    def __init__(self, model: Any, hp: Any = None, *, cuda_graph: bool = True, **rest: Any):
        super().__init__(model, hp, **rest)


class _Stops(_Passes):
    def __init__(self, model: Any, hp: Any = None, *, fuse: bool = False) -> None:
        super().__init__(model, hp)


def test_runtime_options_are_the_constructors_keyword_only_parameters() -> None:
    assert constructor_options(_Base) == ("chunk_size",)
    # **rest passes on: the base's options first, then the subclass's.
    assert constructor_options(_Passes) == ("chunk_size", "cuda_graph")
    # A constructor without **kwargs states every option it takes.
    assert constructor_options(_Stops) == ("fuse",)
    # What the built-in methods declare, read from their signatures.
    assert optimizers.runtime_options("bsqh") == ("chunk_size", "loss_fn")
    assert optimizers.runtime_options("gmp-graph")[-2:] == ("total_steps", "cuda_graph")


@dataclass(frozen=True)
class _Toy(HParams):
    search_order = ("b", "a")

    a: float = hparam(0.1, "a", search=log_uniform(1e-3, 1.0))
    b: int = hparam(1, "b", search=choice(1, 2))
    c: int = hparam(3, "c", search=fixed(5, "minibatch"))
    d: float = hparam(0.0, "d")


def test_search_declarations_follow_the_declared_order_and_modes() -> None:
    searches = _Toy.searches()
    assert list(searches) == ["b", "a", "c"]  # search_order first, then the fields' order
    assert searches["a"].searched and searches["b"].searched and not searches["c"].searched
    assert searches["c"].fixed_in("minibatch") and not searches["c"].fixed_in("fullbatch")
    assert fixed(0).fixed_in("fullbatch")  # no modes: every mode

    @dataclass(frozen=True)
    class Bad(_Toy):
        search_order = ("d",)

    with pytest.raises(ValueError, match=r"search_order names unsearched fields \['d'\]"):
        Bad.searches()


def test_traits_are_declared_and_inherited_by_execution_variants_only() -> None:
    assert optimizers.traits("bsqh").focus and optimizers.traits("bsqh-fast").focus
    assert not optimizers.traits("bsqh-parallel").focus  # a labelled variant: its own
    assert optimizers.traits("prox-sgd-l1-graph").penalty == "l1"
    assert optimizers.traits("l0-hc").penalty == "l0-gates"
    assert not optimizers.traits("gmp").applies_penalty
    assert optimizers.traits("no-such-method") == optimizers.Traits()  # old records read
