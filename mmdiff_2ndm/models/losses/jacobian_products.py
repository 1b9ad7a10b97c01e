"""Jacobian-vector products of a denoiser w.r.t. its noisy input.

Two products, both returning the primal output as well so that the caller can reuse
it for the DSM and KD terms (one forward per network and iteration):

* ``jacobian_vector_product``: ``J v`` by forward-mode AD (``torch.func.jvp``).
  Under ``torch.enable_grad`` the tangent is differentiable w.r.t. the network's
  parameters (reverse-over-forward); under ``torch.no_grad`` no graph is built.
* ``vector_jacobian_product``: ``J^T v`` by reverse mode; ``create_graph=True`` keeps
  it differentiable w.r.t. the parameters (double backward).

``jacobian_safe_kernels`` makes attention and group norm (under autocast) work with
these products, only inside the Jacobian pass.
"""
import contextlib
from typing import Callable, Iterator, Optional, Tuple

import torch
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
    # torch.func.jvp rather than raw forward_ad dual tensors: on torch 2.14.1 the
    # latter's softmax tangent cannot be backpropagated (reverse-over-forward fails
    # with an in-place modification error inside every attention layer).
    try:
        primal, tangent = torch.func.jvp(
            fn, (x.contiguous(), ), (v.contiguous(), ), strict=True)
    except RuntimeError as error:
        if 'independent of the inputs' in str(error):
            raise _no_dependence_error(role) from error
        if 'expected f(*args) to return only tensors' in str(error):
            raise TypeError(f'{role}_fn must return a Tensor.') from error
        raise
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
