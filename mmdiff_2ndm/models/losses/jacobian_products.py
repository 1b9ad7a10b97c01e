"""Jacobian-vector products of a denoiser w.r.t. its noisy input.

Two products, both returning the primal output as well so that the caller can reuse
it for the DSM and KD terms (one forward per network and iteration):

* ``jacobian_vector_product``: ``J v`` by forward-mode AD (dual tensors, inside
  ``_ForwardADKernelMode``). Under ``torch.enable_grad`` the tangent is
  differentiable w.r.t. the network's parameters (reverse-over-forward); under
  ``torch.no_grad`` no graph is built.
* ``vector_jacobian_product``: ``J^T v`` by reverse mode; ``create_graph=True`` keeps
  it differentiable w.r.t. the parameters (double backward).

``jacobian_safe_kernels`` makes attention and group norm (under autocast) work with
these products, only inside the Jacobian pass.
"""
import contextlib
from typing import Callable, Iterator, Optional, Tuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

DenoiserFn = Callable[..., Tensor]


class _GroupNormFloat32Mode(TorchFunctionMode):
    """Feeds ``F.group_norm`` a float32 input, as autocast itself would.

    Under autocast, forward AD through an affine group norm whose input arrives in
    bf16/fp16 leaves a reduced-precision tangent on a float32 primal, which the next
    convolution refuses (input and weight types differ). Autocast runs group_norm in
    float32 anyway, so casting first changes no value.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.group_norm and args and args[0].dtype in _REDUCED:
            args = (args[0].float(), ) + tuple(args[1:])
        return func(*args, **kwargs)


_REDUCED = (torch.float16, torch.bfloat16)


# Linear in their input: with a constant weight the tangent is the same op applied to
# the input tangent without bias. torch's own forward-AD rule also evaluates the op on
# a materialised zero weight tangent (a second, wasted convolution per layer, through
# the slow non-mkldnn path on CPU), and its group-norm rule is a long decomposition.
_LINEAR_IN_INPUT = (F.conv1d, F.conv2d, F.conv3d, F.linear)
_SOFTMAX = (F.softmax, torch.softmax, torch.Tensor.softmax)

# Elementwise arithmetic with one dual operand and one plain tensor or Python number
# (``h + temb``, ``h / output_scale_factor``, ``query * scale``): torch's forward AD
# pairs the plain operand with a zero tangent, and arithmetic on zero tensors runs
# through slow Python reference implementations, for hundreds of ops per iteration.
# The tangent is one op here: t, -t, t * b or t / b.
_BINARY_FUNCS = {
    'add': (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__),
    'sub': (torch.sub, torch.Tensor.sub, torch.Tensor.__sub__),
    'rsub': (torch.Tensor.__rsub__, ),
    'mul': (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__),
    'div': (torch.div, torch.true_divide, torch.Tensor.div, torch.Tensor.__truediv__),
}
_BINARY = {func: kind for kind, funcs in _BINARY_FUNCS.items() for func in funcs}


def _tangent(tensor) -> Optional[Tensor]:
    return fwAD.unpack_dual(tensor).tangent if torch.is_tensor(tensor) else None


def _binary(kind: str, func, args, kwargs) -> Optional[Tensor]:
    """``func(a, b)`` with exactly one dual operand, or None where another rule applies."""
    if len(args) != 2 or 'out' in kwargs or 'rounding_mode' in kwargs:
        return None
    a, b = args
    tangent_a, tangent_b = _tangent(a), _tangent(b)
    if (tangent_a is None) == (tangent_b is None):
        return None
    if tangent_a is None and kind in ('rsub', 'div'):
        return None  # the dual operand is subtracted from / divides: keep torch's rule
    alpha = kwargs.get('alpha', 1)
    primal_a = a if tangent_a is None else fwAD.unpack_dual(a).primal
    primal_b = b if tangent_b is None else fwAD.unpack_dual(b).primal
    out = func(primal_a, primal_b, **kwargs)
    if kind == 'mul':
        out_t = tangent_a * b if tangent_b is None else primal_a * tangent_b
    elif kind == 'div':
        out_t = tangent_a / b
    elif kind == 'rsub':
        out_t = -tangent_a
    elif tangent_a is not None:  # add / sub: a + alpha * b, a - alpha * b
        out_t = tangent_a
    else:
        alpha = alpha if kind == 'add' else -alpha
        out_t = tangent_b if alpha == 1 else tangent_b * alpha
    if (kind in ('mul', 'div') and tangent_a is not None and torch.is_grad_enabled()
            and primal_a.requires_grad):
        # torch's rule adds b's zero tangent times a's primal: a's primal stays in the
        # tangent's graph with a zero gradient (parameters that only shift the output
        # get 0, not None); keep that, with no kernel in the forward.
        out_t = _ZeroLink.apply(out_t, primal_a)
    if out_t.shape != out.shape:
        out_t = out_t.expand(out.shape)
    return fwAD.make_dual(out, out_t.to(out.dtype))


class _ZeroLink(torch.autograd.Function):
    """Identity in ``tangent``; ``primal`` gets a zero gradient."""

    @staticmethod
    def forward(ctx, tangent: Tensor, primal: Tensor) -> Tensor:
        ctx.primal_meta = (primal.shape, primal.dtype, primal.device)
        return tangent.view_as(tangent)

    @staticmethod
    def backward(ctx, grad: Tensor):
        shape, dtype, device = ctx.primal_meta
        return grad, torch.zeros(shape, dtype=dtype, device=device)


def _sub_plain(a: Tensor, b) -> Tensor:
    out = _binary('sub', torch.sub, (a, b), {})
    return a - b if out is None else out


def _add_plain(a: Tensor, b) -> Tensor:
    out = _binary('add', torch.add, (a, b), {})
    return a + b if out is None else out


def _mul_plain(a: Tensor, b) -> Tensor:
    out = _binary('mul', torch.mul, (a, b), {})
    return a * b if out is None else out


def _exp_normalise(scores: Tensor, dim: int) -> Tensor:
    """Softmax as exp / sum; forward AD through it can be backpropagated."""
    peak = scores.detach().amax(dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    exp = _sub_plain(scores, peak).exp()
    # A row's sum is >= 1 (its maximum contributes exp(0)) unless the row is fully
    # masked, where the clamp gives 0 like the math kernel's safe softmax.
    return exp / exp.sum(dim, keepdim=True).clamp_min(torch.finfo(exp.dtype).tiny)


def _attention(query: Tensor, key: Tensor, value: Tensor, attn_mask=None,
               dropout_p: float = 0.0, is_causal: bool = False, scale=None,
               enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` composed of matmuls and ``_exp_normalise``."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeats = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(repeats, dim=-3)
        value = value.repeat_interleave(repeats, dim=-3)
    scale = query.shape[-1]**-0.5 if scale is None else scale
    scores = _mul_plain(query, scale) @ key.transpose(-2, -1)  # (..., L, S)
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill(~causal.tril(), float('-inf'))
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float('-inf'))
                  if attn_mask.dtype == torch.bool else _add_plain(scores, attn_mask))
    probs = _exp_normalise(scores, -1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return probs @ value


class _GroupNormTangent(torch.autograd.Function):
    """Tangent of an un-affine group norm, ``rstd * (t - mean(t) - xhat * mean(xhat * t))``.

    Per (sample, group) of n elements, with ``xhat = (x - mean) * rstd``. The hand-written
    backward (w.r.t. x and t) replaces autograd's record of the dozen elementwise ops
    and reductions above with fewer kernels; ``xhat`` is recomputed there rather than
    saved. ``mean`` and ``rstd`` come in
    detached from the native kernel; their dependence on x is part of the backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
        ctx.save_for_backward(x, t, mean, rstd)
        x_g, t_g, mean, rstd = _grouped(x, t, mean, rstd)
        xhat = (x_g - mean) * rstd
        t_c = t_g - t_g.mean(-1, keepdim=True)
        return (torch.addcmul(t_c, xhat, (xhat * t_c).mean(-1, keepdim=True), value=-1) *
                rstd).view_as(x)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, t, mean, rstd = ctx.saved_tensors
        x_g, t_g, mean, rstd = _grouped(x, t, mean, rstd)
        h = grad.reshape(t_g.shape)
        xhat = (x_g - mean) * rstd
        t_mean = t_g.mean(-1, keepdim=True)
        xt = (xhat * t_g).mean(-1, keepdim=True)
        h_mean = h.mean(-1, keepdim=True)
        xh = (xhat * h).mean(-1, keepdim=True)
        grad_t = None
        if ctx.needs_input_grad[1]:
            # The group-norm Jacobian rstd * (I - 11^T/n - xhat xhat^T/n) is symmetric.
            grad_t = (torch.addcmul(h - h_mean, xhat, xh, value=-1) * rstd).view_as(t)
        grad_x = None
        if ctx.needs_input_grad[0]:
            # d/dx of sum(h * out): through rstd (-rstd^2 xhat / n per element) and
            # through xhat (the same symmetric Jacobian applied to q).
            c = (h * t_g).mean(-1, keepdim=True) - h_mean * t_mean - xh * xt
            q = torch.addcmul(t_g * xh, h, xt)  # -q / rstd of the derivation
            q_c = q - q.mean(-1, keepdim=True)
            coef = (xhat * q).mean(-1, keepdim=True) - c
            grad_x = (-rstd.square() * torch.addcmul(q_c, xhat, coef, value=-1)).view_as(x)
        return grad_x, grad_t, None, None


def _grouped(x: Tensor, t: Tensor, mean: Tensor, rstd: Tensor):
    """x, t as (N, G, n); mean, rstd (N, G) as (N, G, 1)."""
    shape = (mean.shape[0], mean.shape[1], -1)
    return (x.reshape(shape), t.reshape(shape), mean.reshape(*mean.shape, 1),
            rstd.reshape(*rstd.shape, 1))


def _group_norm(input: Tensor, num_groups: int, weight=None, bias=None,
                eps: float = 1e-5) -> Tensor:
    """Group norm of a dual tensor: native kernel for the primal, closed-form tangent.

    With ``xhat = (x - mean) * rstd`` per (sample, group), the tangent is
    ``rstd * (t - mean(t) - xhat * mean(xhat * t)) * weight`` (``_GroupNormTangent``),
    mean and rstd taken from the native kernel's primal pass.
    """
    primal, tangent = fwAD.unpack_dual(input)
    if torch.is_autocast_enabled(primal.device.type) and primal.dtype in _REDUCED:
        # Autocast runs group norm in float32; keep primal and tangent alike.
        primal, tangent = primal.float(), tangent.float()
    primal = primal.contiguous()  # the native kernel needs it (F.group_norm does this)
    batch, channels = primal.shape[:2]
    out, mean, rstd = torch.native_group_norm(
        primal, weight, bias, batch, channels,
        primal.numel() // max(batch * channels, 1), num_groups, eps)
    out_t = _GroupNormTangent.apply(primal, tangent.to(primal.dtype), mean.detach(),
                                    rstd.detach())
    if weight is not None:
        out_t = out_t * weight.view(1, -1, *([1] * (primal.dim() - 2)))
    return fwAD.make_dual(out, out_t.to(out.dtype))


def _linear_in_input(func, args, kwargs) -> Tensor:
    """Conv / linear of a dual input with constant weight: two plain evaluations."""
    primal, tangent = fwAD.unpack_dual(args[0])
    out = func(primal, *args[1:], **kwargs)
    if len(args) > 2:
        args = args[:2] + (None, ) + args[3:]
    else:
        kwargs = dict(kwargs, bias=None)
    return fwAD.make_dual(out, func(tangent.to(primal.dtype), *args[1:], **kwargs))


class _ForwardADKernelMode(TorchFunctionMode):
    """Routes the ops whose stock forward-AD rules fail or are slow, for dual inputs.

    * Softmax and ``F.scaled_dot_product_attention``: the stock softmax tangent
      cannot be backpropagated (reverse-over-forward fails: a tensor it saved is
      modified in place); an exp-normalise composition can.
    * Convolution / linear with a constant weight: the tangent is one more
      evaluation of the op (see ``_LINEAR_IN_INPUT``).
    * Group norm: native primal plus a closed-form tangent, float32 under autocast
      (a reduced-precision tangent on a float32 primal breaks the next conv).
    * add / sub / mul / div with one dual operand and one plain tensor or number:
      primal op plus a one-op tangent (see ``_BINARY``), instead of torch's rule that
      runs zero-tangent arithmetic through slow Python reference kernels.

    Ops whose inputs carry no tangent run unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _BINARY.get(func)
        if kind is not None:
            out = _binary(kind, func, args, kwargs)
            return func(*args, **kwargs) if out is None else out
        if func is F.scaled_dot_product_attention:
            if any(_tangent(a) is not None for a in args[:3]):
                return _attention(*args, **kwargs)
        elif func in _SOFTMAX:
            if _tangent(args[0]) is not None:
                dim = args[1] if len(args) > 1 else kwargs.get('dim')
                dtype = args[2] if func is torch.softmax and len(args) > 2 else kwargs.get(
                    'dtype')
                scores = args[0] if dtype is None else args[0].to(dtype)
                return _exp_normalise(scores, dim)
        elif func in _LINEAR_IN_INPUT:
            weight = args[1] if len(args) > 1 else kwargs.get('weight')
            bias = args[2] if len(args) > 2 else kwargs.get('bias')
            if (_tangent(args[0]) is not None and _tangent(weight) is None
                    and _tangent(bias) is None):
                return _linear_in_input(func, args, kwargs)
        elif func is F.group_norm:
            weight = args[2] if len(args) > 2 else kwargs.get('weight')
            bias = args[3] if len(args) > 3 else kwargs.get('bias')
            if (_tangent(args[0]) is not None and _tangent(weight) is None
                    and _tangent(bias) is None):
                return _group_norm(*args, **kwargs)
        return func(*args, **kwargs)


@contextlib.contextmanager
def jacobian_safe_kernels(device_type: str = 'cpu') -> Iterator[None]:
    """Makes the supported denoisers differentiable to second order, for a block.

    * Routes ``F.scaled_dot_product_attention`` to the composite math kernel: the
      CPU flash kernel supports neither forward AD nor double backward, the GPU
      flash / efficient kernels lack double backward. Every attention of the
      supported families (diffusers ``AttnProcessor2_0`` in ``UNet2DModel``,
      ``UNet2DConditionModel``, ``DiTTransformer2DModel``) goes through that function,
      so swapping diffusers processors is unnecessary; mmagic ``DenoisingUnet``
      attention is plain einsum/softmax and needs nothing.
    * Under autocast only, upcasts group norm inputs (see ``_GroupNormFloat32Mode``);
      outside autocast no torch-function mode is installed (no per-op overhead).

    Only dispatch inside the ``with`` block changes, so normal forwards elsewhere
    keep the fast kernels.

    Args:
        device_type (str): Device type whose autocast state decides the group-norm
            workaround. Defaults to ``'cpu'``.

    Yields:
        None
    """
    with contextlib.ExitStack() as stack:
        stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        if torch.is_autocast_enabled(device_type):
            stack.enter_context(_GroupNormFloat32Mode())
        yield


def _no_dependence_error(role: str) -> ValueError:
    return ValueError(
        f'{role}_fn output does not depend on its input x, so its Jacobian w.r.t. the '
        f'noisy input is zero/undefined. Pass a function that feeds x into the network '
        '(e.g. lambda x: net(x, t)), not one that closes over another tensor.')


def jacobian_vector_product(fn: Callable[[Tensor], Tensor], x: Tensor, v: Tensor,
                            role: str) -> Tuple[Tensor, Tensor]:
    """Computes ``fn(x)`` and ``J v`` with ``J = d fn / d x`` by forward-mode AD.

    Whether the results carry a graph into the parameters follows the ambient grad
    mode: under ``torch.enable_grad`` they do (reverse-over-forward), under
    ``torch.no_grad`` they do not (forward mode itself needs no graph).

    Args:
        fn (Callable): Maps x (B, ...) to the denoiser output (B, ...).
        x (Tensor): Input, (B, ...).
        v (Tensor): Tangent direction, same shape as x.
        role (str): ``'student'`` or ``'teacher'``, used in error messages.

    Returns:
        tuple[Tensor, Tensor]: The output (B, ...) and ``J v`` of the same shape.

    Raises:
        ValueError: If the output does not depend on x.
        TypeError: If fn does not return a Tensor.
    """
    # Raw dual tensors rather than torch.func.jvp: no functorch wrapper per op; the mode
    # makes softmax backpropagatable and skips the slow stock conv / group-norm
    # tangent rules.
    out = None
    with fwAD.dual_level(), _ForwardADKernelMode():
        out = fn(fwAD.make_dual(x.contiguous(), v.contiguous().to(x.dtype)))
        if not torch.is_tensor(out):
            raise TypeError(f'{role}_fn must return a Tensor, got {type(out).__name__}.')
        primal, tangent = fwAD.unpack_dual(out)
    if tangent is None:
        raise _no_dependence_error(role)
    return primal, tangent


def vector_jacobian_product(fn: Callable[[Tensor], Tensor],
                            x: Tensor,
                            direction_fn: Callable[[Tensor], Tensor],
                            role: str,
                            create_graph: bool) -> Tuple[Tensor, Tensor]:
    """Computes ``fn(x)`` and ``J^T v`` with ``J = d fn / d x`` by reverse mode.

    Args:
        fn (Callable): Maps x (B, ...) to the denoiser output (B, ...).
        x (Tensor): Input, (B, ...).
        direction_fn (Callable): Maps the output (B, ...) to v of the output's shape;
            v lives in output space, so it can only be drawn once the output exists.
        role (str): ``'student'`` or ``'teacher'``, used in error messages.
        create_graph (bool): Keep ``J^T v`` differentiable w.r.t. the parameters
            (student). False for the teacher: its graph is freed right away.

    Returns:
        tuple[Tensor, Tensor]: The output (B, ...) (detached unless ``create_graph``)
        and ``J^T v`` with the shape of x.

    Raises:
        ValueError: If the output does not depend on x.
    """
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)
        out = fn(x_leaf)
        if not torch.is_tensor(out):
            raise TypeError(f'{role}_fn must return a Tensor, got {type(out).__name__}.')
        if not out.requires_grad:
            raise _no_dependence_error(role)
        v = direction_fn(out).to(out.dtype)
        # inputs=x only: no gradient is computed for (teacher) parameters.
        (vjp, ) = torch.autograd.grad(
            out, x_leaf, v, create_graph=create_graph, allow_unused=True)
    if vjp is None:
        raise _no_dependence_error(role)
    return (out if create_graph else out.detach()), vjp


def unit_directions(shape: torch.Size,
                    like: Tensor,
                    generator: Optional[torch.Generator] = None) -> Tensor:
    """Draws ``v = g / ||g||``, ``g ~ N(0, I)``, normalised per row.

    Args:
        shape (torch.Size): (N, ...) with one direction per row.
        like (Tensor): Gives device; floating dtype is kept unless it is reduced
            precision, where float32 is used (the normalisation needs the range).
        generator (torch.Generator, optional): Source of randomness on ``like``'s
            device; the global RNG when None.

    Returns:
        Tensor: (N, ...) with unit norm over all non-batch dims.
    """
    dtype = like.dtype if like.dtype in (torch.float32, torch.float64) else torch.float32
    g = torch.randn(shape, generator=generator, device=like.device, dtype=dtype)
    norm = g.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
    return g / norm.view(-1, *([1] * (g.dim() - 1)))
