"""``state_dict()`` / ``load_state_dict()`` for every method, as ``torch.optim`` has them.

A method's state is what its next step reads besides the model's parameters: its torch
optimizer's moments, its own persistent tensors (bSQH's eps and R(u_k), GMP's masks, the
hard-concrete weights and gate logits), host counters (GMP's step) and, for a method
that samples, the random generator it draws from. Saving that, with the model's own
``state_dict()``, and loading both into a fresh model and method continues the run
bit-identically: the same parameters and the same ``StepStats`` as without the stop.

Like ``torch.optim``, the state holds no model parameters: load the model's state first,
then the method's. The hyperparameters are stored and must match the method's own (they
are frozen and shaped the method when it was built), so a checkpoint of another method or
of other settings fails with an error naming the difference instead of training on.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

#: Bumped when the layout changes; older checkpoints are refused with a clear error.
FORMAT = 1


class Checkpointable:
    """The two public methods and the hooks a method overrides to add its own state."""

    method_name: ClassVar[str]
    params: list[Tensor]

    # ---------------------------------------------------------------- hooks
    def _state_tensors(self) -> dict[str, Tensor | None]:
        """Persistent tensors the next step reads, copied in place on load (None: unset)."""
        return {}

    def _state_counters(self) -> dict[str, int]:
        """Host-side counters (e.g. the step count of a schedule)."""
        return {}

    def _load_counters(self, counters: dict[str, int]) -> None:
        for name, value in counters.items():
            setattr(self, name, int(value))

    def _load_tensor(self, name: str, value: Tensor | None) -> None:
        """Put ``value`` where ``_state_tensors()[name]`` lives (in place: graphs read it)."""
        target = self._state_tensors()[name]
        if target is None or value is None:
            if target is value:
                return
            raise ValueError(f"{self.method_name}: state tensor {name!r} is unset on one side")
        if target.shape != value.shape:
            raise ValueError(
                f"{self.method_name}: state tensor {name!r} has shape {tuple(value.shape)} "
                f"in the checkpoint, {tuple(target.shape)} here (another model?)"
            )
        with torch.no_grad():
            target.copy_(value)

    def _samples(self) -> bool:
        """Whether a step draws random numbers (then the generator's state is saved)."""
        return False

    def _state_loaded(self) -> None:
        """Runs after a load (e.g. forget captured CUDA graphs, refresh cached values)."""

    # ---------------------------------------------------------------- public API
    def state_dict(self) -> dict[str, Any]:
        """The method's state (no model parameters): tensors are copies, safe to save."""
        hp = getattr(self, "hp", None)
        state: dict[str, Any] = {
            "format": FORMAT,
            "method": self.method_name,
            "hparams": hp.as_dict() if hp is not None else {},
            "tensors": _copied(self._state_tensors()),
            "counters": dict(self._state_counters()),
        }
        optimizer = _torch_optimizer(self)
        if optimizer is not None:
            state["optimizer"] = optimizer.state_dict()
        if self._samples():
            state["rng"] = _rng_state(self.params[0].device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; a checkpoint of another method or settings is refused."""
        self._check_compatible(state)
        for name, value in state["tensors"].items():
            self._load_tensor(name, value)
        self._load_counters(state["counters"])
        optimizer = _torch_optimizer(self)
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if "rng" in state:
            _set_rng_state(self.params[0].device, state["rng"])
        self._state_loaded()

    def _check_compatible(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"{self.method_name}: not a method state of format {FORMAT} (got {found!r}); "
                "pass what state_dict() returned"
            )
        if state["method"] != self.method_name:
            raise ValueError(
                f"checkpoint of method {state['method']!r} cannot be loaded into "
                f"{self.method_name!r}"
            )
        hp = getattr(self, "hp", None)
        mine = hp.as_dict() if hp is not None else {}
        differ = sorted(k for k in set(mine) | set(state["hparams"]) if
                        mine.get(k) != state["hparams"].get(k))  # fmt: skip
        if differ:
            detail = ", ".join(
                f"{k}={state['hparams'].get(k)!r} saved, {mine.get(k)!r} here" for k in differ
            )
            raise ValueError(
                f"{self.method_name}: hyperparameters differ from the checkpoint's: {detail}"
            )
        expected = set(self._state_tensors())
        if set(state["tensors"]) != expected:
            raise ValueError(
                f"{self.method_name}: checkpoint holds state tensors {sorted(state['tensors'])}, "
                f"this method has {sorted(expected)}"
            )


def indexed(prefix: str, tensors: list[Tensor] | None) -> dict[str, Tensor | None]:
    """``{"prefix.0": t0, ...}``: a list of state tensors under stable names."""
    return {f"{prefix}.{i}": t for i, t in enumerate(tensors or [])}


def _copied(tensors: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    return {k: None if v is None else v.detach().clone() for k, v in tensors.items()}


def _torch_optimizer(method: object) -> torch.optim.Optimizer | None:
    optimizer = getattr(method, "optimizer", None)
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def _rng_state(device: torch.device) -> Tensor:
    """The state of the generator a step on ``device`` draws from."""
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng_state(device: torch.device, value: Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(value, device)
    else:
        torch.set_rng_state(value)
