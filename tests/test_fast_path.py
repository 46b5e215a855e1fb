"""The fast mode (``bsqh-fast``) computes the reference iterates; the perf harness works.

CPU tests compare ``bsqh-fast`` with ``bsqh(max_retries=0)`` step by step; the tests marked
``cuda`` do the same on a GPU, graph against eager, and check that no step synchronises
the host. The GPU machine may lack pytest: ``scripts/gpu-check.sh`` then runs this file
as a script, which runs the ``test_cuda_*`` functions (they use no pytest features).
"""

from __future__ import annotations

import json
import sys

import torch

import optimizers
from optimizers import FastBSQHHParams
from tests.helpers import cpu_compiler_missing, learnable_data, stage_model

try:
    import pytest
except ImportError:  # bare GPU machine: see the __main__ block at the end
    pytest = None

if pytest is not None:
    parametrize = pytest.mark.parametrize
    cuda = pytest.mark.cuda
    needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    needs_cpu_compiler = pytest.mark.skipif(
        cpu_compiler_missing() is not None, reason=str(cpu_compiler_missing())
    )
else:

    def parametrize(*_args, **_kwargs):
        return lambda test: test

    def cuda(test):
        return test

    needs_cuda = cuda
    needs_cpu_compiler = cuda

GRAPHED = [
    "sgd-graph",
    "adam-graph",
    "prox-sgd-l0-graph",
    "prox-sgd-l1-graph",
    "prox-adam-l0-graph",
]
# Settings under which the run both accepts and rejects attempts (checked below).
HPARAMS = {"eps": 0.3, "beta": 2e-3, "gamma": 1e-3}


def minibatches(x, y, size=16):
    """Endless slices in order: a new tensor every step, as from a data loader."""
    index = 0
    while True:
        start = (index * size) % x.shape[0]
        yield x[start : start + size], y[start : start + size]
        index += 1


def full_batches(x, y):
    while True:
        yield x, y


def run(method, batches, steps):
    """Step ``steps`` times; return resolved stats."""
    return [method.step(*next(batches)).resolved() for _ in range(steps)]


def pair(device="cpu", dtype=torch.float32, seed=3, fast_options=None, **hparams):
    """A reference and a fast bSQH on identical models."""
    options = {**HPARAMS, **hparams}
    name = "bsqh-parallel" if options.get("sweep") == "parallel" else "bsqh"  # the ablation
    reference = optimizers.make(
        name, stage_model(seed, dtype=dtype).to(device), max_retries=0, **options
    )
    fast = optimizers.make(
        "bsqh-fast", stage_model(seed, dtype=dtype).to(device), **options, **(fast_options or {})
    )
    return reference, fast


def compare(reference, fast, make_batches, steps=25, atol=1e-6):
    """Run both on the same batches; assert equal iterates, eps and accept counts."""
    ref_stats = run(reference, make_batches(), steps)
    fast_stats = run(fast, make_batches(), steps)
    for a, b in zip(reference.model.parameters(), fast.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=atol, rtol=1e-5), float((a - b).abs().max())
    assert abs(reference.eps - fast.eps) <= 1e-9 * reference.eps
    assert [s.accepted for s in ref_stats] == [s.accepted for s in fast_stats]
    for s, t in zip(ref_stats, fast_stats, strict=True):
        assert abs(s.objective - t.objective) <= 1e-5 * max(1.0, abs(s.objective))
        assert abs(s.eps - t.eps) <= 1e-9 * s.eps
    return ref_stats, fast_stats


def data(device="cpu", dtype=torch.float32):
    x, y = learnable_data(n=96, dtype=dtype)
    return x.to(device), y.to(device)


# --------------------------------------------------------------------------- CPU
def test_registry_lists_the_fast_methods_and_their_options():
    names = set(optimizers.available())
    assert {"bsqh-fast", *GRAPHED} <= names
    assert optimizers.hyperparameters("bsqh-fast")["max_retries"] == 0
    assert {"cuda_graph", "reuse_adjoints", "fuse"} <= set(optimizers.runtime_options("bsqh-fast"))
    assert "momentum" in optimizers.hyperparameters("sgd-graph")
    assert "cuda_graph" in optimizers.runtime_options("sgd-graph")


VARIANTS = [
    {},
    {"inner_steps": 2},
    {"chunk_size": 40},
    {"penalty": "l1"},
    {"eps_min": 0.25, "eps_max": 0.5},
]


@parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v) or "plain")
@parametrize("sweep", ["sequential", "parallel"])
def test_minibatch_iterates_equal_the_reference(sweep, variant):
    reference, fast = pair(sweep=sweep, **variant)
    x, y = data()
    ref_stats, fast_stats = compare(reference, fast, lambda: minibatches(x, y))
    for s, t in zip(ref_stats, fast_stats, strict=True):
        assert (s.forward_passes, s.backward_passes) == (t.forward_passes, t.backward_passes)


@parametrize("variant", [{}, {"inner_steps": 2}, {"chunk_size": 40}], ids=["plain", "k2", "chunk"])
@parametrize("sweep", ["sequential", "parallel"])
def test_full_batch_reuse_equals_the_reference_and_saves_the_forward(sweep, variant):
    reference, fast = pair(sweep=sweep, **variant)
    x, y = data()
    ref_stats, fast_stats = compare(reference, fast, lambda: full_batches(x, y), steps=20)
    # Steps: fresh, then one seeding the reuse, then each starting from the carried adjoints.
    ref_forward = ref_stats[0].forward_passes
    assert fast_stats[0].forward_passes == ref_forward
    assert fast_stats[1].backward_passes == ref_stats[1].backward_passes + 1
    assert all(abs(s.forward_passes - (ref_forward - 1)) < 1e-9 for s in fast_stats[2:])
    assert all(s.backward_passes == ref_stats[0].backward_passes for s in fast_stats[2:])


# Compiling costs seconds per structure (cached on disk afterwards): few, telling cases.
FUSED_CASES = [
    ("minibatch", {}),
    (
        "minibatch",
        {"penalty": "l1", "eps": 0.05, "eps_min": 0.05, "eps_max": 1.0, "sweep": "parallel"},
    ),
    ("full", {"inner_steps": 2}),
]


@needs_cpu_compiler
@parametrize("batches, variant", FUSED_CASES, ids=["plain", "l1-clamped-parallel", "full-k2"])
def test_fused_iterates_equal_the_reference(batches, variant):
    """The compiled elementwise work (C++ on the CPU, as Triton on CUDA) gives the
    reference iterates: float64, where only rounding could tell the two apart."""
    reference, fast = pair(dtype=torch.float64, fast_options={"fuse": True}, **variant)
    x, y = data(dtype=torch.float64)
    make = (lambda: minibatches(x, y)) if batches == "minibatch" else (lambda: full_batches(x, y))
    _, fast_stats = compare(reference, fast, make, steps=20, atol=1e-9)
    assert fast.fused  # compiled, not fallen back to the eager functions
    accepted = [s.accepted for s in fast_stats]
    assert any(accepted) and not all(accepted)


def test_fusion_is_off_on_the_cpu_unless_asked_and_refuses_bad_values():
    assert not pair()[1].fused
    model = stage_model(3)
    with pytest.raises(ValueError, match="fuse must be true, false or unset.*'yes'"):
        optimizers.make("bsqh-fast", model, fuse="yes")
    model[0][0].weight.data = model[0][0].weight.data.transpose(2, 3).contiguous().transpose(2, 3)
    with pytest.raises(ValueError, match="fuse=True needs contiguous parameters"):
        optimizers.make("bsqh-fast", model, fuse=True)


def test_the_runs_compared_both_accept_and_reject():
    x, y = data()
    for batches in (lambda: minibatches(x, y), lambda: full_batches(x, y)):
        stats = run(pair()[1], batches(), 25)
        accepted = [s.accepted for s in stats]
        assert any(accepted) and not all(accepted)


def test_without_reuse_every_step_is_fresh():
    reference, fast = pair(fast_options={"reuse_adjoints": False})
    x, y = data()
    ref_stats, fast_stats = compare(reference, fast, lambda: full_batches(x, y), steps=10)
    assert [s.forward_passes for s in fast_stats] == [s.forward_passes for s in ref_stats]


def test_a_batch_changed_in_place_is_not_mistaken_for_the_same_batch():
    reference, fast = pair()
    x, y = data()
    buffers = {id(reference): (x.clone(), y.clone()), id(fast): (x.clone(), y.clone())}
    source = minibatches(x, y, size=96)
    for step in range(12):
        xs, ys = next(source)
        noisy = xs + 0.1 * step
        for method in (reference, fast):
            bx, by = buffers[id(method)]
            bx.copy_(noisy)  # same tensor object, new contents: the version counter moves
            by.copy_(ys)
            method.step(bx, by)
    for a, b in zip(reference.model.parameters(), fast.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_parameters_changed_from_outside_refresh_r_and_the_carried_adjoints():
    reference, fast = pair()
    x, y = data()
    for round_ in range(3):
        for method in (reference, fast):
            for _ in range(4):
                method.step(x, y)
            with torch.no_grad():  # e.g. a checkpoint load between steps
                for p in method.model.parameters():
                    p.mul_(0.5 + 0.1 * round_)
    for a, b in zip(reference.model.parameters(), fast.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    assert abs(float(fast.objective(x, y)) - float(reference.objective(x, y))) < 1e-6


def test_stats_are_device_tensors_resolved_later():
    _, fast = pair()
    x, y = data()
    stats = fast.step(x[:16], y[:16])
    for name in ("loss", "objective", "accepted", "eps", "tau", "retries"):
        value = getattr(stats, name)
        assert isinstance(value, torch.Tensor) and value.dim() == 0, name
    done = stats.resolved()
    assert isinstance(done.accepted, bool) and isinstance(done.retries, int)
    assert done.retries == (0 if done.accepted else 1)
    assert done.eps == fast.eps
    assert stats.finite


def test_max_retries_other_than_zero_is_refused_with_the_allowed_value():
    model = stage_model()
    if pytest is not None:
        with pytest.raises(ValueError, match="max_retries must be 0 for bsqh-fast.*got 3"):
            FastBSQHHParams(max_retries=3)
        with pytest.raises(ValueError, match="eps must be a finite number > 0, got 0.0"):
            optimizers.make("bsqh-fast", model, eps=0.0)


def test_eps_can_be_set_and_prepare_on_the_cpu_changes_nothing():
    _, fast = pair()
    x, y = data()
    fast.eps = 0.7
    before = [p.detach().clone() for p in fast.model.parameters()]
    fast.prepare(x[:16], y[:16])
    assert fast.eps == 0.7
    assert all(torch.equal(a, b) for a, b in zip(before, fast.model.parameters(), strict=True))
    assert not fast.uses_cuda_graph


@parametrize("name", GRAPHED)
def test_graphed_baselines_fall_back_to_the_eager_step_on_the_cpu(name):
    base = name.removesuffix("-graph")
    x, y = data()
    lr = 0.02 if "adam" in name else 0.3
    methods = [
        optimizers.make(n, stage_model(seed=5), lr=lr, beta=1e-3, gamma=1e-3) for n in (base, name)
    ]
    for method in methods:
        if hasattr(method, "prepare"):
            method.prepare(x, y)
        for xb, yb in zip(*(t.split(32) for t in (x, y)), strict=True):
            stats = method.step(xb, yb)
    assert not methods[1].uses_cuda_graph
    for a, b in zip(methods[0].model.parameters(), methods[1].model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert isinstance(stats.loss, torch.Tensor)


@parametrize("sweep", ["sequential", "parallel"])
def test_graph_plumbing_gives_the_reference_iterates(fake_graphs, sweep):
    x, y = data()
    reference, fast = pair(sweep=sweep)
    before = [p.detach().clone() for p in fast.model.parameters()]
    fast.prepare(x[:16], y[:16])
    fast.prepare(x, y)
    assert all(torch.equal(a, b) for a, b in zip(before, fast.model.parameters(), strict=True))
    assert fast.eps == HPARAMS["eps"] and len(fast._graphs.graphs) == 6
    for batches in (lambda: minibatches(x, y), lambda: full_batches(x, y)):
        compare(reference, fast, batches, steps=12)
        assert fast.uses_cuda_graph
    assert fast._graphs.failure is None and len(fast._graphs.graphs) == 6


@parametrize(
    ("name", "hparams"),
    [
        ("sgd", {"lr": 0.3, "momentum": 0.9, "nesterov": True}),
        ("prox-sgd-l1", {"lr": 0.3, "beta": 1e-3}),
        ("adam", {"lr": 0.02, "weight_decay": 1e-2}),
        ("prox-adam-l0", {"lr": 0.02, "beta": 1e-3}),
    ],
)
def test_graph_plumbing_of_the_baselines_rolls_back_optimizer_state(fake_graphs, name, hparams):
    x, y = data()
    eager = optimizers.make(name, stage_model(seed=4), **hparams)
    graphed = optimizers.make(f"{name}-graph", stage_model(seed=4), **hparams)
    graphed.prepare(x[:32], y[:32])
    for _ in range(3):
        for xb, yb in zip(x.split(32), y.split(32), strict=True):
            expected = eager.step(xb, yb)
            stats = graphed.step(xb, yb)
            assert float(stats.loss) == float(expected.loss)
    assert graphed.uses_cuda_graph
    for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_failed_capture_warns_once_and_steps_eagerly(fake_graphs, monkeypatch):
    from optimizers import graphs

    def broken(fn, static):
        fn(*static)  # changes the state before failing: it must be rolled back
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.GraphCache, "_capture", staticmethod(broken))
    x, y = data()
    reference, fast = pair()
    with pytest.warns(RuntimeWarning, match="bsqh-fast: CUDA graphs disabled.*capturing"):
        fast.prepare(x[:16], y[:16])
    assert fast.eps == HPARAMS["eps"]
    compare(reference, fast, lambda: minibatches(x, y), steps=10)
    assert not fast.uses_cuda_graph


def test_perf_harness_writes_the_report(tmp_path):
    from bench.cli import main

    out = tmp_path / "perf.json"
    argv = [
        "perf",
        "--device=cpu",
        "--batch-sizes=16,full",
        "--samples=64",
        "--steps=2",
        "--warmup=2",
        "--methods=bsqh,bsqh-fast,sgd-graph,bsqh-fast:reuse_adjoints=false",
        f"--json={out}",
        "--no-progress",
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["torch"] == torch.__version__
    rows = report["rows"]
    required = {
        "method",
        "batch_size",
        "step_ms",
        "ratio_to_sgd",
        "forward_passes",
        "backward_passes",
        "epoch_s",
    }
    assert all(required <= set(r) for r in rows)
    labels = ["sgd", "bsqh", "bsqh-fast", "sgd-graph", "bsqh-fast:reuse_adjoints=false"]
    assert [r["method"] for r in rows] == labels * 2  # sgd added as the reference
    assert [r["batch_size"] for r in rows] == [16] * 5 + [64] * 5
    for r in rows:
        assert r["step_ms"] > 0 and r["forward_passes"] >= 1 and r["backward_passes"] >= 1
        steps_per_epoch = 64 // r["batch_size"]
        assert abs(r["epoch_s"] - r["step_ms"] * steps_per_epoch / 1000) < 1e-9
        if r["method"] == "sgd":
            assert r["ratio_to_sgd"] == 1.0
    by = {(r["method"], r["full_batch"]): r for r in rows}
    # Full batch, from the third step on: the candidate's forward gives the next adjoints.
    saved = by[("bsqh", True)]["forward_passes"] - by[("bsqh-fast", True)]["forward_passes"]
    assert abs(saved - 1.0) < 1e-9
    assert by[("bsqh-fast", False)]["forward_passes"] == by[("bsqh", False)]["forward_passes"]


def test_perf_harness_rejects_bad_options():
    from bench.cli import main

    if pytest is None:
        return
    for argv in (
        ["perf", "--methods=nosuch"],
        ["perf", "--methods=bsqh-fast:nosuch=1"],
        ["perf", "--batch-sizes=0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert main(["perf", "--device=cpu", "--batch-sizes=128", "--samples=64"]) == 2


# --------------------------------------------------------------------------- CUDA
def _cuda_data():
    x, y = data()
    return x.cuda(), y.cuda()


@cuda
@needs_cuda
def test_cuda_fast_path_equals_the_reference_graph_and_eager():
    # float64: the two paths round differently (flat sums, device scalars), and in float32
    # a last-bit difference could flip an L0 threshold decision over many steps.
    x, y = (t.double() if t.is_floating_point() else t for t in _cuda_data())
    for graph in (False, True):
        for sweep in ("sequential", "parallel"):
            for batches, steps in (
                (lambda: minibatches(x, y), 25),
                (lambda: full_batches(x, y), 15),
            ):
                reference, fast = pair(
                    "cuda", torch.float64, sweep=sweep, fast_options={"cuda_graph": graph}
                )
                compare(reference, fast, batches, steps=steps, atol=1e-9)
                assert fast.uses_cuda_graph == graph


@cuda
@needs_cuda
def test_cuda_graph_equals_eager_fast_path():
    x, y = _cuda_data()
    for options in ({}, {"chunk_size": 40, "inner_steps": 2}):
        runs = []
        for graph in (False, True):
            fast = pair("cuda", fast_options={"cuda_graph": graph}, **options)[1]
            stats = run(fast, minibatches(x, y), 20) + run(fast, full_batches(x, y), 10)
            runs.append((fast, stats))
        (eager, eager_stats), (graphed, graph_stats) = runs
        for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
        assert [s.accepted for s in eager_stats] == [s.accepted for s in graph_stats]
        assert abs(eager.eps - graphed.eps) <= 1e-9 * eager.eps


@cuda
@needs_cuda
def test_cuda_prepare_captures_without_changing_parameters_or_eps():
    x, y = _cuda_data()
    fast = pair("cuda")[1]
    sgd = optimizers.make("sgd-graph", stage_model(seed=3).cuda(), lr=0.1, momentum=0.9)
    for method in (fast, sgd):
        before = [p.detach().clone() for p in method.model.parameters()]
        eps = getattr(method, "eps", None)
        method.prepare(x, y)
        after = list(method.model.parameters())
        assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert getattr(method, "eps", None) == eps
        method.step(x, y)
        assert method.uses_cuda_graph
    assert len(fast._graphs.graphs) == 3 and fast._graphs.failure is None


@cuda
@needs_cuda
def test_cuda_graphed_baselines_equal_their_eager_steps():
    x, y = _cuda_data()
    for name, hparams in [
        ("sgd", {"lr": 0.3}),
        ("sgd", {"lr": 0.3, "momentum": 0.9, "nesterov": True}),
        ("prox-sgd-l0", {"lr": 0.3, "beta": 1e-3}),
        ("adam", {"lr": 0.02, "weight_decay": 1e-2}),
        ("prox-adam-l0", {"lr": 0.02, "beta": 1e-3}),
        ("gmp", {"lr": 0.3, "final_sparsity": 0.5, "begin_step": 1, "end_step": 7, "frequency": 3}),
    ]:
        models = [stage_model(seed=4).cuda() for _ in range(2)]
        eager = optimizers.make(name, models[0], **hparams)
        graphed = optimizers.make(f"{name}-graph", models[1], **hparams)
        graphed.prepare(x[:32], y[:32])
        for _ in range(3):
            for xb, yb in zip(x.split(32), y.split(32), strict=True):
                eager.step(xb, yb)
                stats = graphed.step(xb, yb)
        assert graphed.uses_cuda_graph, name
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-5), (name, float((a - b).abs().max()))
        assert torch.isfinite(stats.loss)


@cuda
@needs_cuda
def test_cuda_graphed_peers_equal_their_eager_steps():
    """l0-hc-graph draws its gates' noise inside the graph (the warm-up's draws are rolled
    back) and emsa-l0-graph captures a double backward: both give the eager iterates."""
    x, y = _cuda_data()
    for name, hparams in [
        ("l0-hc", {"lr": 0.03, "lam": 1e-3}),
        ("emsa-l0", {"inner_lr": 0.5, "inner_steps": 2, "rho": 0.1, "beta": 1e-4}),
    ]:
        methods = []
        for variant in (name, f"{name}-graph"):
            method = optimizers.make(variant, stage_model(seed=4).cuda(), **hparams)
            torch.manual_seed(11)
            if variant.endswith("-graph"):
                method.prepare(x[:32], y[:32])
            for _ in range(3):
                for xb, yb in zip(x.split(32), y.split(32), strict=True):
                    method.step(xb, yb)
            methods.append(method)
        eager, graphed = methods
        assert graphed.uses_cuda_graph and graphed._graphs.failure is None, name
        for a, b in zip(eager.model.parameters(), graphed.model.parameters(), strict=True):
            assert torch.allclose(a, b, atol=1e-5), (name, float((a - b).abs().max()))


@cuda
@needs_cuda
def test_cuda_steps_never_synchronise_the_host():
    x, y = _cuda_data()
    methods = [
        pair("cuda", fast_options={"cuda_graph": False})[1],
        pair("cuda")[1],
        optimizers.make("sgd-graph", stage_model(seed=3).cuda(), post_step_loss=False),
    ]
    for method in methods:
        for batches in (minibatches(x, y), full_batches(x, y)):
            method.prepare(*next(batches))
            run(method, batches, 3)  # warm: lazy initialisation may synchronise
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                for _ in range(5):
                    method.step(*next(batches))
            finally:
                torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@cuda
@needs_cuda
def test_cuda_kernel_count_sees_inside_replayed_graphs():
    """bench perf's kernel count must count a graph replay's kernels one by one: the
    graphed and the eager fast path run the same kernels, give or take a few copies."""
    from bench.perf.kernels import kernels_per_step

    x, y = _cuda_data()
    counts = []
    for graph in (False, True):
        fast = pair("cuda", fast_options={"cuda_graph": graph})[1]
        batches = minibatches(x, y)
        run(fast, batches, 3)
        counts.append(kernels_per_step(lambda f=fast, b=batches: f.step(*next(b))))
    eager, graphed = counts
    assert eager > 20, counts
    assert 0.8 * eager <= graphed <= 1.2 * eager, counts


@cuda
@needs_cuda
def test_cuda_fused_step_equals_the_eager_one_with_fewer_kernels():
    """Triton kernels give the eager iterates (float64), and fusing removes kernels."""
    from bench.perf.kernels import kernels_per_step

    x, y = (t.double() if t.is_floating_point() else t for t in _cuda_data())
    counts = {}
    for batches, steps in ((lambda: minibatches(x, y), 20), (lambda: full_batches(x, y), 12)):
        _, eager = pair("cuda", torch.float64, fast_options={"fuse": False})
        _, fused = pair("cuda", torch.float64, fast_options={"fuse": True})
        compare(eager, fused, batches, steps=steps, atol=1e-9)
        assert fused.fused and fused.uses_cuda_graph
        for name, method in (("eager", eager), ("fused", fused)):
            stream = batches()
            counts[name] = kernels_per_step(lambda m=method, b=stream: m.step(*next(b)))
        assert counts["fused"] < counts["eager"], counts


def _run_cuda_tests_without_pytest() -> int:
    """Run every ``test_cuda_*`` function; print one line each; return the failure count."""
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to run")
        return 1
    failures = 0
    for name, test in sorted(globals().items()):
        if name.startswith("test_cuda_") and callable(test):
            try:
                test()
                print(f"PASSED {name}")
            except Exception as error:  # report and go on to the next check
                failures += 1
                print(f"FAILED {name}: {type(error).__name__}: {error}")
    return failures


if __name__ == "__main__":
    sys.exit(1 if _run_cuda_tests_without_pytest() else 0)
