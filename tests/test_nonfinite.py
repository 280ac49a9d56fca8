"""Numeric faults and stops: the non-finite step guard (host and device modes), the samplers'
uniform fallback on zero/NaN/Inf scores, and the graceful-stop signal handler."""
import math
import os
import signal
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pada_fast.sampling import ImportanceDataSampler, ImportancePathSampler, UniformDataSampler
from pada_fast.train.nonfinite import NonFiniteError, NonFiniteGuard, init_momentum_buffers, supports_device_skip
from pada_fast.train.signals import GracefulStop

NAN, INF = float("nan"), float("inf")


# -- a miniature supernet step -------------------------------------------------------------------
class TinySupernet(torch.nn.Module):
    """Two layers of three candidate linear maps; a path picks one per layer."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList(
            torch.nn.ModuleList(torch.nn.Linear(6, 6) for _ in range(3)) for _ in range(2))
        self.head = torch.nn.Linear(6, 4)

    def forward(self, x, path):
        for layer, choice in zip(self.layers, path):
            x = torch.relu(layer[choice](x))
        return self.head(x)

    def path_parameters(self, path):
        params, slots = [], []
        for l, (layer, choice) in enumerate(zip(self.layers, path)):
            for p in layer[choice].parameters():
                params.append(p)
                slots.append(l * 3 + choice)
        return params, slots


def batches(steps, n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    out = []
    for _ in range(steps):
        idx = torch.randint(0, n, (8,), generator=g)
        path = torch.randint(0, 3, (2,), generator=g).tolist()
        out.append((x[idx], y[idx], idx, path))
    return out


def train(steps, bad_steps=(), skip_steps=(), mode="host", fused=False, clip=True, guard_kwargs=None,
          device="cpu"):
    """Run ``steps``; ``bad_steps`` get a NaN poisoned into their input; ``skip_steps`` are left
    out entirely (the reference for what a guarded bad step must equal)."""
    model = TinySupernet().to(device)
    kwargs = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, **kwargs)
    if fused:
        init_momentum_buffers(opt)
    mask = torch.ones(2, 3, dtype=torch.bool)
    ps = ImportancePathSampler(mask, granularity="per_edge", device=device)
    ds = ImportanceDataSampler(40, device=device)
    guard = NonFiniteGuard(mode=mode, optimizer=opt, device=device,
                           **(guard_kwargs or {"max_consecutive": 100}))
    loss_sum = torch.zeros((), device=device)
    for step, (x, y, idx, path) in enumerate(batches(steps)):
        if step in skip_steps:
            continue
        x, y, idx = x.to(device), y.to(device), idx.to(device)
        if step in bad_steps:
            x = x.clone()
            x[0, 0] = NAN
        logits = model(x, path)
        per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        importance = (torch.softmax(logits.detach(), 1) - torch.nn.functional.one_hot(y, 4)).norm(dim=1)
        loss = per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, 5.0, foreach=True) if clip else None
        guard.check(loss, [p.grad for p in params], total_norm=norm, step=step)
        pp, slots = model.path_parameters(path)
        guard.record(ps, [p.grad for p in pp], slots, ds, idx, importance)
        guard.step(opt)
        loss_sum += guard.masked(per_sample.detach().sum())
    return model, opt, ps, ds, guard, loss_sum


def assert_identical(a, b):
    ma, oa, psa, dsa = a[:4]
    mb, ob, psb, dsb = b[:4]
    for (name, x), y in zip(ma.state_dict().items(), mb.state_dict().values()):
        assert torch.equal(x, y), name
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        ba, bb = oa.state.get(pa, {}).get("momentum_buffer"), ob.state.get(pb, {}).get("momentum_buffer")
        assert (ba is None and bb is None) or torch.equal(ba, bb)
    for key in ("norm_sum", "step_count"):
        assert torch.equal(getattr(psa, key), getattr(psb, key)), key
    for key in ("score_sum", "count"):
        assert torch.equal(getattr(dsa, key), getattr(dsb, key)), key


@pytest.mark.parametrize("mode, fused", [("host", False), ("host", True), ("device", True)])
@pytest.mark.parametrize("clip", [True, False])
def test_a_skipped_step_changes_nothing(mode, fused, clip, device):
    """Training with NaN-poisoned steps under the guard equals training without those steps:
    weights, momentum, PA accumulators and DA scores, bit for bit."""
    bad = {0, 3, 4, 9}
    guarded = train(12, bad_steps=bad, mode=mode, fused=fused, clip=clip, device=device)
    reference = train(12, skip_steps=bad, mode=mode, fused=fused, clip=clip, device=device)
    assert_identical(guarded, reference)
    guard = guarded[4]
    assert guard.counts() == {"total": 4, "consecutive": 0, "longest_run": 2, "last_step": 9}
    assert torch.isfinite(guarded[5]) and torch.equal(guarded[5], reference[5])
    assert all(torch.isfinite(p).all() for p in guarded[0].parameters())


def test_without_the_guard_a_nan_step_poisons_everything(monkeypatch):
    """The control: with the check disabled, one NaN step leaves NaN weights and statistics."""
    def never_skip(self, loss, grads, total_norm=None, step=None):
        self._skip = False
        return False
    monkeypatch.setattr(NonFiniteGuard, "check", never_skip)
    model, _, ps, ds, _, _ = train(3, bad_steps={1})
    assert any(torch.isnan(p).any() for p in model.parameters())
    assert torch.isnan(ps.norm_sum).any() and torch.isnan(ds.score_sum).any()


def test_device_mode_needs_a_fused_optimiser():
    p = torch.nn.Parameter(torch.ones(2))
    foreach = torch.optim.SGD([p], lr=0.1, momentum=0.9, foreach=True)
    fused = torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True)
    assert not supports_device_skip(foreach) and supports_device_skip(fused)
    with pytest.raises(ValueError, match="fused=True"):
        NonFiniteGuard(mode="device", optimizer=foreach)
    assert NonFiniteGuard(optimizer=fused).mode == "device"            # auto: a fused optimiser
    assert NonFiniteGuard(optimizer=foreach).mode == "host"            # auto: any other
    assert NonFiniteGuard(mode="device", optimizer=fused).mode == "device"
    assert fused.state[p]["momentum_buffer"].abs().sum() == 0      # prepared


def test_fused_sgd_needs_momentum_buffers_for_a_supernet():
    """Why init_momentum_buffers exists: fused SGD cannot mix new and existing buffers, which
    a supernet does the first time it trains a candidate."""
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))

    def two_steps(prepare):
        opt = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, fused=True)
        if prepare:
            assert init_momentum_buffers(opt) == 2
        a.grad, b.grad = torch.ones(2), None
        opt.step()
        b.grad = torch.ones(2)
        opt.step()

    with pytest.raises(TypeError):
        two_steps(prepare=False)
    two_steps(prepare=True)


@pytest.mark.parametrize("mode", ["host", "device"])
def test_consecutive_limit_stops_with_a_message(mode):
    expected = r"not finite on 3 consecutive steps.*nonfinite_max_consecutive=2"
    with pytest.raises(NonFiniteError, match=expected):
        _, _, _, _, guard, _ = train(8, bad_steps={2, 3, 4}, mode=mode, fused=True,
                                     guard_kwargs={"max_consecutive": 2})
        guard.poll()            # device mode notices at the next poll


@pytest.mark.parametrize("mode", ["host", "device"])
def test_total_limit_and_zero_tolerance(mode):
    with pytest.raises(NonFiniteError, match=r"3 steps had a non-finite.*nonfinite_max_total=2"):
        _, _, _, _, guard, _ = train(10, bad_steps={1, 4, 7}, mode=mode, fused=True,
                                     guard_kwargs={"max_consecutive": 5, "max_total": 2})
        guard.poll()
    with pytest.raises(NonFiniteError, match="at step 6"):
        _, _, _, _, guard, _ = train(8, bad_steps={6}, mode=mode, fused=True,
                                     guard_kwargs={"max_consecutive": 0})
        guard.poll()


@pytest.mark.parametrize("mode", ["host", "device"])
def test_poll_reports_new_skips_once_and_state_round_trips(mode):
    *_, guard, _ = train(6, bad_steps={1, 2}, mode=mode, fused=True)
    line = guard.poll()
    assert "skipped 2 step(s)" in line and "last at step 2" in line
    assert guard.poll() is None
    state = guard.state_dict()
    other = NonFiniteGuard(mode="host")
    other.load_state_dict(state)
    assert other.counts() == guard.counts() and other.poll() is None


def test_nonfinite_loss_with_finite_gradients_is_skipped_too():
    guard = NonFiniteGuard()
    assert guard.check(torch.tensor(INF), [torch.ones(3)]) is True
    assert guard.check(torch.tensor(1.0), [torch.ones(3), None]) is False
    assert guard.check(torch.tensor(1.0), [torch.tensor([1.0, -INF])]) is True
    assert guard.check(torch.tensor(1.0), [], total_norm=torch.tensor(NAN)) is True
    assert guard.counts()["total"] == 3


def test_guard_arguments_are_checked():
    with pytest.raises(ValueError, match="max_consecutive"):
        NonFiniteGuard(max_consecutive=-1)
    with pytest.raises(ValueError, match="mode"):
        NonFiniteGuard(mode="sometimes")


# -- samplers: never an invalid distribution -------------------------------------------------------
# Importances and gradient norms are norms: >= 0 or NaN/Inf (a negative score is covered by
# the test below). -inf still appears: it is what a NaN-free overflow of a difference gives.
special = st.sampled_from([0.0, NAN, INF, -INF, 1e-45, 1e38])
score = st.one_of(st.floats(0, 10, allow_nan=False), special)


def assert_valid_distribution(p, mask=None):
    p = p.to(torch.float64)
    assert torch.isfinite(p).all() and (p >= 0).all()
    if mask is not None:
        assert (p[~mask] == 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1], dtype=torch.float64), rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(norms=st.lists(st.lists(score, min_size=4, max_size=4), min_size=3, max_size=3),
       granularity=st.sampled_from(["shared", "per_edge"]), epoch=st.integers(0, 4))
def test_path_sampler_distribution_is_always_valid(norms, granularity, epoch):
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]], dtype=torch.bool)
    s = ImportancePathSampler(mask, granularity=granularity)
    for l, row in enumerate(norms):
        for k, v in enumerate(row):
            if mask[l, k]:
                s.record([torch.tensor([v], dtype=torch.float32)], [l * 4 + k])
    p = s.end_epoch(epoch, 4)
    assert_valid_distribution(p, mask)
    if s.fallback_message is not None:
        assert "fell back to uniform" in s.fallback_message
    paths = s.sample_epoch(50, torch.Generator().manual_seed(0))
    assert mask.gather(1, paths.t()).all()


@pytest.mark.parametrize("granularity", ["shared", "per_edge"])
@pytest.mark.parametrize("value", [0.0, NAN, INF, -INF])
def test_path_sampler_falls_back_to_uniform_and_says_so(granularity, value):
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    s = ImportancePathSampler(mask, granularity=granularity)
    for slot in (0, 1, 2, 3, 4):
        s.record([torch.tensor([value])], [slot])
    p = s.end_epoch(2, 4)
    assert torch.equal(p, mask.double() / mask.double().sum(1, keepdim=True))
    assert "fell back to uniform on layers [0, 1]" in s.fallback_message


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(score, min_size=1, max_size=12), epoch=st.integers(0, 4))
def test_data_sampler_distribution_is_always_valid(scores, epoch):
    n = 16
    s = ImportanceDataSampler(n)
    s.record(torch.arange(len(scores)), torch.tensor(scores, dtype=torch.float32))
    s.end_epoch(epoch, 4)
    q = s.probabilities()
    assert_valid_distribution(q)
    if s.fallback_message is not None:
        assert "fell back to uniform" in s.fallback_message
        assert torch.equal(q, torch.full((n,), 1 / n, dtype=torch.float64))
    stream = s.epoch_stream(torch.Generator().manual_seed(0))
    assert stream.shape == (n,) and 0 <= int(stream.min()) and int(stream.max()) < n
    summary = s.summary()
    assert math.isfinite(summary["entropy"]) and math.isfinite(summary["effective_sample_size"])


@pytest.mark.parametrize("values", [[0.0, 0.0], [NAN, 1.0], [INF, 1.0], [-INF, 1.0], [1e38, 1e38, 1e38]])
def test_data_sampler_falls_back_to_uniform_and_says_so(values):
    s = ImportanceDataSampler(8)
    s.record(torch.arange(len(values)), torch.tensor(values, dtype=torch.float32))
    s.end_epoch(2, 4)
    q = s.probabilities()
    assert_valid_distribution(q)
    if values == [1e38, 1e38, 1e38]:            # float64 sum does not overflow: a real update
        assert s.fallback_message is None
    else:
        assert torch.equal(q, torch.full((8,), 1 / 8, dtype=torch.float64))
        assert "fell back to uniform" in s.fallback_message


def test_negative_importance_never_gives_a_negative_probability():
    s = ImportanceDataSampler(4)
    s.record(torch.tensor([0, 1]), torch.tensor([2.0, -1.0]))
    s.end_epoch(1, 2)
    assert_valid_distribution(s.probabilities())


def test_fallback_message_is_cleared_by_a_good_epoch():
    s = ImportanceDataSampler(4)
    s.record(torch.tensor([0]), torch.tensor([NAN]))
    s.end_epoch(1, 2)
    assert s.fallback_message
    s.record(torch.tensor([0]), torch.tensor([1.0]))
    s.end_epoch(1, 2)
    assert s.fallback_message is None


def test_uniform_data_sampler_is_accepted_by_the_guard_in_device_mode():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=True)
    guard = NonFiniteGuard(mode="device", optimizer=opt)
    ps = ImportancePathSampler(torch.ones(1, 2, dtype=torch.bool))
    guard.check(torch.tensor(NAN), [torch.ones(2)])
    guard.record(ps, [torch.ones(2)], [0], UniformDataSampler(4), torch.tensor([0]), torch.tensor([1.0]))
    assert ps.step_count.sum() == 0


# -- graceful stop -------------------------------------------------------------------------------
def test_sigterm_sets_the_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    messages = []
    with GracefulStop(log=messages.append) as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM" and stop.exit_code == 143
        os.kill(os.getpid(), signal.SIGTERM)           # a second SIGTERM changes nothing
        assert stop.requested_on_any_rank()            # no process group: the local flag
    assert signal.getsignal(signal.SIGTERM) is before
    assert len(messages) == 1 and "finishing the current step" in messages[0]
    assert "SIGTERM" in stop.message("at epoch 2 step 5") and "--resume" in stop.message()


def test_second_sigint_interrupts_at_once():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), GracefulStop(log=lambda m: None) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.exit_code == 130
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second SIGINT should have raised")
    assert signal.getsignal(signal.SIGINT) is before


def test_outside_the_main_thread_nothing_is_installed():
    before = signal.getsignal(signal.SIGTERM)
    seen = {}

    def worker():
        with GracefulStop() as stop:
            seen["installed"] = signal.getsignal(signal.SIGTERM) is not before
            stop.request()
            seen["requested"] = stop.requested

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"installed": False, "requested": True}
