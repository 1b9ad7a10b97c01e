"""Behaviour of SecondOrderMatchLoss on denoisers whose Jacobians are known."""
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from mmdiff_2ndm.models.losses import (JacobianMatchOutput, SecondOrderMatchLoss,
                                       jacobian_safe_kernels)


class LinearDenoiser(nn.Module):
    """eps(x) = A x on the flattened input, so d eps / d x = A."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.matrix = nn.Parameter(matrix.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) @ self.matrix.T).view(x.shape)


def sphere_fourth_moment(m: torch.Tensor) -> float:
    """E[(v^T M v)^2] for v uniform on the unit sphere in R^n, M symmetric."""
    n = m.shape[0]
    return float((torch.trace(m)**2 + 2 * torch.trace(m @ m)) / (n * (n + 2)))


def _pair(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a_s = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    a_d = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    return a_s, a_d


# x: (B, 1, 2, 3) -> n = 6, so the flattening over all non-batch dims is exercised.
X_SHAPE = (2, 1, 2, 3)


@pytest.mark.parametrize('mode', ['jvp', 'vjp'])
def test_second_order_matches_closed_form(mode):
    a_s, a_d = _pair()
    if mode == 'jvp':  # ||A v||^2 = v^T A^T A v
        m = a_s.T @ a_s - a_d.T @ a_d
    else:  # ||A^T v||^2 = v^T A A^T v
        m = a_s @ a_s.T - a_d @ a_d.T
    loss_fn = SecondOrderMatchLoss(
        mode=mode, num_projections=20000, loss_weight=1.0, seed=0)
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    student, teacher = LinearDenoiser(a_s), LinearDenoiser(a_d)
    loss = loss_fn(lambda z, batch_index=None: student(z),
                   lambda z, batch_index=None: teacher(z), x)
    expected = sphere_fourth_moment(m)
    assert loss.item() == pytest.approx(expected, rel=0.05)
    # The two modes differ per direction, and here in expectation too.
    other = a_s @ a_s.T - a_d @ a_d.T if mode == 'jvp' else a_s.T @ a_s - a_d.T @ a_d
    assert abs(sphere_fourth_moment(other) - expected) > 0.1 * expected


def test_first_order_matches_closed_form():
    a_s, a_d = _pair()
    n_mat = (a_s - a_d).T @ (a_s - a_d)
    loss_fn = SecondOrderMatchLoss(
        mode='first_order', num_projections=20000, loss_weight=1.0, seed=0)
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    student, teacher = LinearDenoiser(a_s), LinearDenoiser(a_d)
    loss = loss_fn(lambda z, batch_index=None: student(z),
                   lambda z, batch_index=None: teacher(z), x)
    assert loss.item() == pytest.approx(float(torch.trace(n_mat)) / 6, rel=0.03)


@pytest.mark.parametrize('mode', ['jvp', 'vjp', 'first_order'])
def test_zero_when_student_equals_teacher(mode):
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 1))
    x = torch.randn(3, 2, 5, 5)
    loss = SecondOrderMatchLoss(mode=mode, seed=1)(net, net, x)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_loss_weight_scale_and_weight_are_exact_factors():
    a_s, a_d = _pair(seed=3)
    student, teacher = LinearDenoiser(a_s), LinearDenoiser(a_d)
    x = torch.randn(*X_SHAPE, dtype=torch.float64)

    def run(mode='jvp', **kwargs):
        return SecondOrderMatchLoss(mode=mode, seed=5, loss_weight=1.0)(
            student, teacher, x, **kwargs).item()

    base = run()
    assert SecondOrderMatchLoss(seed=5)(student, teacher, x).item() == \
        pytest.approx(0.1 * base)  # default loss_weight 0.1 (authors)
    # scale multiplies J v: the second-order summand is quartic in it ...
    assert run(scale=torch.full((2, ), 3.0)) == pytest.approx(81 * base)
    # ... the first-order one quadratic.
    assert run('first_order', scale=torch.full((2, ), 3.0)) == \
        pytest.approx(9 * run('first_order'))
    # weight is linear per sample; 0 drops a sample.
    w0 = run(weight=torch.tensor([1.0, 0.0]))
    w1 = run(weight=torch.tensor([0.0, 1.0]))
    assert w0 + w1 == pytest.approx(base)
    assert w0 > 0 and w1 > 0 and w0 != pytest.approx(w1)
    summed = SecondOrderMatchLoss(seed=5, loss_weight=1.0, reduction='sum')(
        student, teacher, x).item()
    assert summed == pytest.approx(2 * base)


class SmallConvNet(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.tanh(self.conv1(x)))


@pytest.mark.parametrize('mode', ['jvp', 'vjp', 'first_order'])
def test_gradcheck_wrt_student_parameters(mode):
    torch.manual_seed(0)
    student, teacher = SmallConvNet().double(), SmallConvNet().double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    names = [n for n, _ in student.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in student.parameters())

    def loss_of(*flat):
        state = dict(zip(names, flat))
        # A fresh seeded loss: every evaluation sees the same directions.
        loss_fn = SecondOrderMatchLoss(mode=mode, seed=0, loss_weight=1.0)
        return loss_fn(lambda z: functional_call(student, state, (z, )), teacher, x)

    assert torch.autograd.gradcheck(
        loss_of, params, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_outputs_are_reused_and_teacher_gets_no_gradient():
    torch.manual_seed(0)
    student, teacher = SmallConvNet(), SmallConvNet()
    x = torch.randn(3, 2, 4, 4)
    for mode in ('jvp', 'vjp', 'first_order'):
        out = SecondOrderMatchLoss(mode=mode, seed=0)(
            student, teacher, x, return_outputs=True)
        assert isinstance(out, JacobianMatchOutput)
        torch.testing.assert_close(out.student_out, student(x))
        torch.testing.assert_close(out.teacher_out, teacher(x))
        assert out.student_out.requires_grad and not out.teacher_out.requires_grad
        (out.loss + (out.student_out - out.teacher_out).pow(2).sum()).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in student.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        student.zero_grad()


class CountingDenoiser(nn.Module):
    """Time-conditioned net that records the batch indices it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallConvNet()
        self.calls = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.net(x) * t.view(-1, 1, 1, 1)


@pytest.mark.parametrize('fraction,num_proj', [(0.25, 1), (1.0, 3), (0.5, 2)])
def test_batch_index_contract_and_full_outputs(fraction, num_proj):
    torch.manual_seed(0)
    student, teacher = CountingDenoiser(), CountingDenoiser()
    x = torch.randn(8, 2, 4, 4)
    t = torch.linspace(0.5, 2.0, 8)  # per-sample: indexing errors change the outputs

    def closure(net):
        return lambda z, batch_index=None: net(
            z, t if batch_index is None else t[batch_index])

    loss_fn = SecondOrderMatchLoss(batch_fraction=fraction, num_projections=num_proj,
                                   seed=0)
    out = loss_fn(closure(student), closure(teacher), x, return_outputs=True)
    selected = max(1, round(fraction * 8))
    expected_calls = [selected * num_proj] + ([8 - selected] if selected < 8 else [])
    assert student.calls == expected_calls and teacher.calls == expected_calls
    with torch.no_grad():
        torch.testing.assert_close(out.student_out, student(x, t))
        torch.testing.assert_close(out.teacher_out, teacher(x, t))
    out.loss.backward()
    assert all(p.grad is not None for p in student.parameters())
    # Without return_outputs the unselected samples are not run at all.
    student.calls.clear()
    loss_fn(closure(student), closure(teacher), x)
    assert student.calls == [selected * num_proj]


def test_fn_without_batch_index_is_rejected_only_when_needed():
    net = SmallConvNet()
    x = torch.randn(4, 2, 4, 4)
    SecondOrderMatchLoss()(net, net, x)  # plain 2-arg fns are fine at fraction 1, K 1
    with pytest.raises(TypeError, match='batch_index'):
        SecondOrderMatchLoss(batch_fraction=0.5)(lambda z: net(z), net, x)
    with pytest.raises(TypeError, match='batch_index'):
        SecondOrderMatchLoss(num_projections=2)(lambda z: net(z), net, x)


def test_seed_reproducible_and_global_rng_untouched():
    torch.manual_seed(0)
    student, teacher = SmallConvNet(), SmallConvNet()
    x = torch.randn(4, 2, 4, 4)
    first = SecondOrderMatchLoss(seed=7)
    second = SecondOrderMatchLoss(seed=7)
    state = torch.get_rng_state()
    a1, a2 = first(student, teacher, x), first(student, teacher, x)
    assert torch.equal(torch.get_rng_state(), state)
    assert a1.item() != a2.item()  # the sequence advances ...
    assert second(student, teacher, x).item() == a1.item()  # ... reproducibly
    assert second(student, teacher, x).item() == a2.item()


@pytest.mark.parametrize('kwargs,match', [
    (dict(mode='jtj'), 'mode'),
    (dict(num_projections=0), 'num_projections'),
    (dict(num_projections=1.5), 'num_projections'),
    (dict(batch_fraction=0.0), 'batch_fraction'),
    (dict(batch_fraction=1.5), 'batch_fraction'),
    (dict(reduction='none'), 'reduction'),
    (dict(loss_weight=-1.0), 'loss_weight'),
    (dict(loss_weight=float('nan')), 'loss_weight'),
    (dict(nonfinite='ignore'), 'nonfinite'),
])
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SecondOrderMatchLoss(**kwargs)


def test_input_errors_are_named():
    net = SmallConvNet()
    x = torch.randn(2, 2, 4, 4)
    frozen_input = torch.randn(2, 2, 4, 4)
    for mode in ('jvp', 'vjp', 'first_order'):
        with pytest.raises(ValueError, match='student_fn output does not depend'):
            SecondOrderMatchLoss(mode=mode)(lambda z: net(frozen_input), net, x)
        with pytest.raises(ValueError, match='shape'):
            SecondOrderMatchLoss(mode=mode)(net, lambda z: net(z)[:, :1], x)
    with pytest.raises(ValueError, match='scale'):
        SecondOrderMatchLoss()(net, net, x, scale=torch.ones(3))


@pytest.mark.parametrize('mode', ['jvp', 'vjp'])
def test_nonfinite_raises_or_returns_for_the_step_guard(mode):
    # Entries of 1e20 keep A x finite in float32 but ||A v||^2 ~ 1e40 overflows.
    student = LinearDenoiser(torch.full((6, 6), 1e20))
    teacher = LinearDenoiser(torch.eye(6))
    x = torch.randn(*X_SHAPE) * 1e-10
    with pytest.raises(FloatingPointError, match=r'student \|\|J v\|\|\^2'):
        SecondOrderMatchLoss(mode=mode)(student, teacher, x)
    # 'return' hands the non-finite term to the caller (DiffusionDistiller's step guard
    # skips the whole update) and names the culprit; a finite call clears it.
    loss_fn = SecondOrderMatchLoss(mode=mode, nonfinite='return')
    out = loss_fn(student, teacher, x, return_outputs=True)
    assert not torch.isfinite(out.loss)
    assert 'student ||J v||^2' in loss_fn.last_nonfinite
    assert torch.isfinite(loss_fn(teacher, teacher, x))
    assert loss_fn.last_nonfinite is None
    with pytest.raises(ValueError, match="nonfinite='return'"):
        SecondOrderMatchLoss(nonfinite='skip')


def test_builds_from_mmagic_registry():
    from mmagic.registry import MODELS
    loss_fn = MODELS.build(dict(type='2ndMatchLoss', mode='vjp', num_projections=2))
    assert isinstance(loss_fn, SecondOrderMatchLoss)
    assert (loss_fn.mode, loss_fn.num_projections, loss_fn.loss_weight) == ('vjp', 2, 0.1)


def test_safe_attention_is_scoped():
    flags = (torch.backends.cuda.flash_sdp_enabled(),
             torch.backends.cuda.mem_efficient_sdp_enabled())
    q = torch.randn(1, 2, 5, 4)
    import torch.autograd.forward_ad as fwAD
    with jacobian_safe_kernels(), fwAD.dual_level():
        out = nn.functional.scaled_dot_product_attention(
            *(fwAD.make_dual(q, torch.ones_like(q)), ) * 3)
        assert fwAD.unpack_dual(out).tangent is not None
    assert (torch.backends.cuda.flash_sdp_enabled(),
            torch.backends.cuda.mem_efficient_sdp_enabled()) == flags


@pytest.mark.parametrize('mode', ['jvp', 'vjp'])
def test_log_ratio_form_closed_form_and_scale_free(mode):
    """form='log_ratio': (log ||J_S v||^2 - log ||J_D v||^2)^2 per direction; a student
    that is c times its teacher gives (2 log c)^2 for every v; a scale cancels."""
    a_s, a_d = _pair()
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(*X_SHAPE, generator=gen, dtype=torch.float64)
    v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    student, teacher = LinearDenoiser(a_s), LinearDenoiser(a_d)
    loss_fn = SecondOrderMatchLoss(mode=mode, loss_weight=1.0, form='log_ratio')
    loss = loss_fn(student, teacher, x, directions=v)
    flat_v = v.flatten(1)
    prod_s = flat_v @ (a_s if mode == 'jvp' else a_s.T).T  # J v (jvp) or J^T v (vjp)
    prod_d = flat_v @ (a_d if mode == 'jvp' else a_d.T).T
    expected = (prod_s.pow(2).sum(1).log() - prod_d.pow(2).sum(1).log()).pow(2).mean()
    torch.testing.assert_close(loss, expected)

    scaled = SecondOrderMatchLoss(mode=mode, loss_weight=1.0, form='log_ratio', scale='sigma')
    sigma = torch.tensor([0.01, 0.9], dtype=torch.float64)
    torch.testing.assert_close(scaled(student, teacher, x, directions=v, sigma_t=sigma), loss)

    c = 3.0
    tripled = LinearDenoiser(c * a_d)
    value = SecondOrderMatchLoss(mode=mode, loss_weight=1.0, form='log_ratio', seed=0)(
        tripled, teacher, x)
    assert value.item() == pytest.approx((2 * math.log(c))**2, rel=1e-9)


def test_log_ratio_form_is_refused_with_first_order():
    with pytest.raises(ValueError, match="mode='first_order' matches J v itself"):
        SecondOrderMatchLoss(mode='first_order', form='log_ratio')
    with pytest.raises(ValueError, match='form must be one of'):
        SecondOrderMatchLoss(form='log')


@pytest.mark.parametrize('safe_kernels', [True, False])
def test_safe_kernels_switches_the_students_vjp_pass(monkeypatch, safe_kernels):
    """'vjp' mode runs the student's double-backward pass inside jacobian_safe_kernels
    exactly when safe_kernels is on; the teacher's pass never."""
    import contextlib

    from mmdiff_2ndm.models.losses import second_order_match_loss as module
    entered = []

    @contextlib.contextmanager
    def recording(device_type):
        entered.append(device_type)
        yield

    monkeypatch.setattr(module, 'jacobian_safe_kernels', recording)
    a_s, a_d = _pair()
    student, teacher = LinearDenoiser(a_s), LinearDenoiser(a_d)
    x = torch.randn(*X_SHAPE, dtype=torch.float64)
    SecondOrderMatchLoss(mode='vjp', safe_kernels=safe_kernels)(
        lambda z, batch_index=None: student(z), lambda z, batch_index=None: teacher(z), x)
    assert entered == (['cpu'] if safe_kernels else [])
