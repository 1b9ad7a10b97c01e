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
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

DenoiserFn = Callable[..., Tensor]


class _GroupNormFloat32Mode(TorchFunctionMode):
    """Feeds ``F.group_norm`` a float32 input, as autocast itself would.

    Under autocast, forward AD through an affine group norm whose input arrives in
    bf16/fp16 leaves a reduced-precision tangent on a float32 primal, and the next
    convolution fails ("Input type (torch.FloatTensor) and weight type
    (CPUBFloat16Type)"; torch 2.14.1). Autocast runs group_norm in float32 anyway,
    so casting first changes no value.
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


def _tangent(tensor) -> Optional[Tensor]:
    return fwAD.unpack_dual(tensor).tangent if torch.is_tensor(tensor) else None


def _exp_normalise(scores: Tensor, dim: int) -> Tensor:
    """Softmax as exp / sum; forward AD through it can be backpropagated."""
    peak = scores.detach().amax(dim, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    exp = (scores - peak).exp()
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
    scores = (query * scale) @ key.transpose(-2, -1)  # (..., L, S)
    if is_causal:
        causal = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device)
        scores = scores.masked_fill(~causal.tril(), float('-inf'))
    if attn_mask is not None:
        scores = (scores.masked_fill(~attn_mask, float('-inf'))
                  if attn_mask.dtype == torch.bool else scores + attn_mask)
    probs = _exp_normalise(scores, -1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return probs @ value


def _group_norm(input: Tensor, num_groups: int, weight=None, bias=None,
                eps: float = 1e-5) -> Tensor:
    """Group norm of a dual tensor: native kernel for the primal, closed-form tangent.

    With ``xhat = (x - mean) * rstd`` per (sample, group), the tangent is
    ``rstd * (t - mean(t) - xhat * mean(xhat * t)) * weight``.
    """
    primal, tangent = fwAD.unpack_dual(input)
    if torch.is_autocast_enabled(primal.device.type) and primal.dtype in _REDUCED:
        # Autocast runs group norm in float32; keep primal and tangent alike.
        primal, tangent = primal.float(), tangent.float()
    out = F.group_norm(primal, num_groups, weight, bias, eps)
    shape = (primal.shape[0], num_groups, -1)
    x_g, t_g = primal.reshape(shape), tangent.to(primal.dtype).reshape(shape)
    var, mean = torch.var_mean(x_g, dim=-1, keepdim=True, correction=0)
    rstd = (var + eps).rsqrt()
    xhat = (x_g - mean) * rstd
    t_c = t_g - t_g.mean(-1, keepdim=True)
    out_t = ((t_c - xhat * (xhat * t_c).mean(-1, keepdim=True)) * rstd).view_as(primal)
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
      cannot be backpropagated (reverse-over-forward fails with "modified by an
      inplace operation", torch 2.14.1); an exp-normalise composition can.
    * Convolution / linear with a constant weight: the tangent is one more
      evaluation of the op (see ``_LINEAR_IN_INPUT``).
    * Group norm: native primal plus a closed-form tangent, float32 under autocast
      (a reduced-precision tangent on a float32 primal breaks the next conv).

    Ops whose inputs carry no tangent run unchanged.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
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
    # Raw dual tensors rather than torch.func.jvp: no functorch wrapper per op (about
    # a quarter less dispatch time); the mode makes softmax backpropagatable and
    # skips the slow stock conv / group-norm tangent rules.
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
