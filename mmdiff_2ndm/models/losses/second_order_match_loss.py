"""The 2ndMatch loss: second-order Jacobian matching by random projections."""
import contextlib
import inspect
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch
from mmagic.registry import MODELS
from torch import Tensor, nn

from .jacobian_products import (jacobian_safe_kernels, jacobian_vector_product,
                                unit_directions, vector_jacobian_product)

MODES = ('jvp', 'vjp', 'first_order')
REDUCTIONS = ('mean', 'sum')
NONFINITE = ('raise', 'return')
SCALES = (None, 'sigma')
FORMS = ('squared', 'log_ratio')


class JacobianMatchOutput(NamedTuple):
    """Result of ``SecondOrderMatchLoss(..., return_outputs=True)``.

    Attributes:
        loss (Tensor): The weighted scalar Jacobian term.
        student_out (Tensor): Student output for the full batch (B, ...), in the
            order of x, with its graph into the student's parameters.
        teacher_out (Tensor): Teacher output for the full batch (B, ...), detached.
    """
    loss: Tensor
    student_out: Tensor
    teacher_out: Tensor


@MODELS.register_module(name='2ndMatchLoss')
class SecondOrderMatchLoss(nn.Module):
    """Matches the student's input-Jacobian geometry to the teacher's (2ndMatch).

    Per sample ``i`` and projection ``k`` with ``v ~ Uniform(unit sphere)``:

    * ``mode='jvp'`` (default, the paper's J^T J):
      ``(s_i^2 ||J_S v||^2 - s_i^2 ||J_D v||^2)^2`` with ``J v`` by forward mode,
      the student's made differentiable by reverse-over-forward;
    * ``mode='vjp'`` (the authors' released code, matches J J^T):
      the same with ``J^T v`` by reverse-mode double backward, v in output space;
    * ``mode='first_order'`` (ablation baseline): ``s_i^2 ||J_S v - J_D v||^2``.

    ``J = d fn(x) / d x``, norms are sums of squares over all non-batch dims
    (pixel-summed, as the authors), ``s_i`` is the optional ``scale``. The per-sample
    term is the mean over the K projections, multiplied by the optional ``weight``,
    reduced over the samples that received the term and multiplied by ``loss_weight``.

    Calling contract for ``student_fn`` / ``teacher_fn``:

    * ``fn(x)`` is called with exactly the full batch x (all B samples, in order,
      once) and must return the denoiser output, same batch size. Time step and
      conditioning are closed over by the caller.
    * When the loss evaluates a *different* batch (``batch_fraction < 1``, or
      ``num_projections > 1`` which repeats the selected samples K times), it calls
      ``fn(x_sub, batch_index=idx)`` where ``idx`` is a LongTensor (N,) such that
      ``x_sub[j]`` is ``x[idx[j]]``. The fn must then index its per-sample
      time steps / conditioning with ``idx``, e.g.
      ``lambda x, batch_index=None: net(x, t if batch_index is None else t[batch_index])``.
      A fn without a ``batch_index`` parameter (or ``**kwargs``) is fine only when
      ``batch_fraction == 1`` and ``num_projections == 1``; otherwise a TypeError says so.
    * Teacher products run without a graph into the teacher's parameters (forward
      mode under ``no_grad``; reverse mode w.r.t. x only), so the teacher's
      parameters get no gradient, whether or not they require grad.

    Note:
        Cost: each network runs one forward over every sample per call (the Jacobian
        pass doubles as the forward, see ``return_outputs``); ``num_projections`` K > 1
        runs the selected samples K times in one batch, so activation memory of the
        Jacobian pass grows K-fold. In 'vjp' mode the student's pass uses the math
        SDPA kernel (see ``jacobian_safe_kernels``); in forward mode attention,
        softmax, conv, linear and group norm of dual tensors run through
        forward-AD-specific compositions (see ``jacobian_vector_product``); normal
        forwards are untouched.
        For an epsilon-predictor ``||J v||^2`` grows like ``1/sigma_t^2``, so the
        unscaled summand grows like ``1/sigma_t^4``: pass ``scale=sigma_t`` to keep a
        few small-t samples from dominating the gradient (unscaled is the paper's form).

    Args:
        loss_weight (float): Multiplies the reduced term. Defaults to 0.1 (authors).
        num_projections (int): K >= 1 independent unit directions per sample, each
            its own term (mean over K). Defaults to 1.
        mode (str): ``'jvp'``, ``'vjp'`` or ``'first_order'``. Defaults to ``'jvp'``.
        reduction (str): ``'mean'`` or ``'sum'`` over the batch. With
            ``batch_fraction < 1`` the sum is rescaled by B / (selected samples) so
            that both reductions estimate their full-batch value. Defaults to ``'mean'``.
        batch_fraction (float): Fraction in (0, 1] of the batch (at least one sample,
            drawn at random each call) that gets the Jacobian term; the rest only
            runs plain forwards when ``return_outputs=True``. Defaults to 1.0.
        seed (int, optional): Seeds a private generator for directions and sample
            selection (reproducible sequence, global RNG untouched). Defaults to None
            (global RNG).
        nonfinite (str): ``'raise'``: a non-finite term raises FloatingPointError
            naming the culprit. ``'return'``: the non-finite term is returned as it is,
            with the culprit in ``last_nonfinite``, for the caller to skip the whole
            update: ``DiffusionDistiller`` builds its loss with ``'return'`` and its
            step guard skips the optimizer and EMA update (``max_consecutive_skips``).
            Defaults to ``'raise'``.
        safe_kernels (bool): In 'vjp' mode, run the student's double-backward pass
            inside ``jacobian_safe_kernels`` (math SDPA kernel). Disable only for
            models without fused attention. Forward mode needs no such switch.
            Defaults to True.
        scale (str, optional): The term's own per-sample scale when the caller passes
            none: None (the paper's unscaled term) or ``'sigma'``: ``sigma_t =
            sqrt(1 - alpha_bar_t)`` (the ``sigma_t`` argument) scales each sample's
            products, which tames the ~1/sigma_t^4 growth at small t. Defaults to None.
        t_range (Sequence[int], optional): ``(t_min, t_max)``, inclusive: samples whose
            timestep (the ``timesteps`` argument) lies outside get weight 0. Defaults
            to None (all).
        warmup_iters (int): Ramps the weight linearly from 0 to 1 over this many
            iterations (the ``iteration`` argument). Defaults to 0.
        form (str): How 'jvp'/'vjp' compare the squared norms: ``'squared'`` (the
            paper's ``(||J_S v||^2 - ||J_D v||^2)^2``) or ``'log_ratio'``, the scale-free
            ``(log ||J_S v||^2 - log ||J_D v||^2)^2`` (a per-sample ``scale`` cancels in
            it, so every timestep weighs alike without one). Defaults to ``'squared'``.
    """

    # What DiffusionDistiller hands to forward (see models/losses/loss_inputs.py).
    loss_inputs = dict(student_fn='student_fn', teacher_fn='teacher_fn', x='x_t',
                       directions='directions', timesteps='timesteps', sigma_t='sigma_t',
                       iteration='iteration')

    def __init__(self,
                 loss_weight: float = 0.1,
                 num_projections: int = 1,
                 mode: str = 'jvp',
                 reduction: str = 'mean',
                 batch_fraction: float = 1.0,
                 seed: Optional[int] = None,
                 nonfinite: str = 'raise',
                 safe_kernels: bool = True,
                 scale: Optional[str] = None,
                 t_range: Optional[Sequence[int]] = None,
                 warmup_iters: int = 0,
                 form: str = 'squared') -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
        if isinstance(num_projections, bool) or not isinstance(num_projections, int) \
                or num_projections < 1:
            raise ValueError(
                f'num_projections must be an int >= 1, got {num_projections!r}.')
        if not 0.0 < float(batch_fraction) <= 1.0:
            raise ValueError(f'batch_fraction must be in (0, 1], got {batch_fraction!r}.')
        if reduction not in REDUCTIONS:
            raise ValueError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}.')
        if not float(loss_weight) >= 0.0:  # also rejects NaN
            raise ValueError(f'loss_weight must be >= 0, got {loss_weight!r}.')
        if nonfinite == 'skip':
            raise ValueError(
                "nonfinite='skip' is gone: it stepped the optimizer and the EMA with zero "
                "gradients. Use nonfinite='return' (DiffusionDistiller's default), whose "
                'non-finite term makes the distiller skip the whole update.')
        if nonfinite not in NONFINITE:
            raise ValueError(f'nonfinite must be one of {NONFINITE}, got {nonfinite!r}.')
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f'seed must be an int or None, got {seed!r}.')
        if form not in FORMS:
            raise ValueError(f'form must be one of {FORMS}, got {form!r}.')
        if form == 'log_ratio' and mode == 'first_order':
            raise ValueError("form='log_ratio' compares squared norms; mode='first_order' "
                             "matches J v itself: use form='squared' with it.")
        if scale not in SCALES:
            raise ValueError(f'scale must be one of {SCALES}, got {scale!r}.')
        if isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) \
                or warmup_iters < 0:
            raise ValueError(f'warmup_iters must be an int >= 0, got {warmup_iters!r}.')
        self.scale = scale
        self.form = form
        self.t_range = _check_t_range(t_range)
        self.warmup_iters = warmup_iters
        self.loss_weight = float(loss_weight)
        self.num_projections = num_projections
        self.mode = mode
        self.reduction = reduction
        self.batch_fraction = float(batch_fraction)
        self.seed = seed
        self.nonfinite = nonfinite
        self.safe_kernels = safe_kernels
        self.last_nonfinite: Optional[str] = None
        self._last_sq_norms: Optional[Tuple[Tensor, Tensor]] = None
        self._generators: Dict[torch.device, torch.Generator] = {}

    def extra_repr(self) -> str:
        return (f'mode={self.mode!r}, loss_weight={self.loss_weight}, '
                f'num_projections={self.num_projections}, reduction={self.reduction!r}, '
                f'batch_fraction={self.batch_fraction}, seed={self.seed}, '
                f'nonfinite={self.nonfinite!r}, scale={self.scale!r}, '
                f't_range={self.t_range}, warmup_iters={self.warmup_iters}, '
                f'form={self.form!r}')

    def _generator(self, device: torch.device) -> Optional[torch.Generator]:
        """Private per-device generator, created on first use from ``seed``."""
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def forward(self,
                student_fn: Callable[..., Tensor],
                teacher_fn: Callable[..., Tensor],
                x: Tensor,
                scale: Optional[Tensor] = None,
                weight: Optional[Tensor] = None,
                return_outputs: bool = False,
                directions: Optional[Tensor] = None,
                timesteps: Optional[Tensor] = None,
                sigma_t: Optional[Tensor] = None,
                iteration: Optional[int] = None):
        """Computes the weighted Jacobian matching term.

        Args:
            student_fn (Callable): Student denoiser as a function of x (see the class
                docstring for the ``batch_index`` contract).
            teacher_fn (Callable): Teacher denoiser, same contract.
            x (Tensor): Noisy input, (B, ...).
            scale (Tensor, optional): (B,), multiplies both Jacobian products of each
                sample before matching (e.g. sigma_t). Defaults to None (unscaled).
            weight (Tensor, optional): (B,), weights each sample's term; 0 drops it.
                Defaults to None.
            return_outputs (bool): Also return both networks' outputs for the full
                batch. Defaults to False.
            directions (Tensor, optional): Unit projection directions (K, B, ...)
                (or (B, ...) when K = 1), per sample and projection, in the shape of
                x (input space for 'jvp'/'first_order', output space, which must
                have x's shape, for 'vjp'). Lets the caller tie v to the sample,
                e.g. for 2 processes x B == 1 process x 2B. Defaults to None: drawn
                here (``seed`` / global RNG).
            timesteps (Tensor, optional): (B,), for ``t_range``.
            sigma_t (Tensor, optional): (B,), the scale of ``scale='sigma'``.
            iteration (int, optional): The training iteration, for ``warmup_iters``.

        Returns:
            Tensor | JacobianMatchOutput: The scalar loss, or
            ``JacobianMatchOutput(loss, student_out, teacher_out)``.
        """
        if not torch.is_tensor(x) or x.dim() < 1 or x.shape[0] < 1:
            raise ValueError('x must be a Tensor (B, ...) with B >= 1, got '
                             f'{getattr(x, "shape", type(x).__name__)}.')
        batch = x.shape[0]
        if self.scale == 'sigma':
            if scale is not None or sigma_t is None:
                raise ValueError("scale='sigma' takes the per-sample scale from sigma_t: "
                                 'pass sigma_t (B,) and no scale.')
            scale = sigma_t
        if self.t_range is not None or self.warmup_iters > 0:
            if weight is not None:
                raise ValueError('t_range / warmup_iters make the per-sample weight; pass '
                                 'no weight.')
            weight = self.schedule_weights(timesteps, iteration)
        scale = self._per_sample(scale, 'scale', x)
        weight = self._per_sample(weight, 'weight', x)
        directions = self._check_directions(directions, x)  # (K, B, ...) or None
        gen = self._generator(x.device)

        selected, rest = self._select_samples(batch, x.device, gen)
        repeat_index, x_projected, v_projected = self._projection_batch(
            x, selected, directions, student_fn, teacher_fn)
        student_out, teacher_out, term = self._jacobian_terms(
            student_fn, teacher_fn, x_projected, repeat_index, gen, v_projected)  # (K*N,)
        num_selected = batch if selected is None else selected.numel()
        # The first of the K copies of each selected sample provides its output.
        student_out, teacher_out = student_out[:num_selected], teacher_out[:num_selected]
        loss = self._reduce(term, scale, weight, selected, batch)
        loss = self._check_finite(loss, student_out)

        if not return_outputs:
            return loss
        if selected is None:
            return JacobianMatchOutput(loss, student_out, teacher_out)
        student_rest = student_fn(x[rest], batch_index=rest)
        with torch.no_grad():
            teacher_rest = teacher_fn(x[rest], batch_index=rest)
        inverse = torch.argsort(torch.cat([selected, rest]))
        student_out = torch.cat([student_out, student_rest.to(student_out.dtype)])[inverse]
        teacher_out = torch.cat([teacher_out, teacher_rest.to(teacher_out.dtype)])[inverse]
        return JacobianMatchOutput(loss, student_out, teacher_out.detach())

    def schedule_weights(self, timesteps: Optional[Tensor],
                         iteration: Optional[int]) -> Optional[Tensor]:
        """Per-sample weights (B,) of ``t_range`` and ``warmup_iters``, or None (off).

        Args:
            timesteps (Tensor): The samples' timesteps (B,).
            iteration (int, optional): The training iteration (needed by the warm-up).

        Returns:
            Tensor | None: 0 outside ``t_range``, times ``min(1, iteration /
            warmup_iters)``.
        """
        if self.t_range is None and self.warmup_iters == 0:
            return None
        if timesteps is None:
            raise ValueError('t_range / warmup_iters need the timesteps (B,) of the batch.')
        weight = torch.ones(timesteps.shape[0], device=timesteps.device)
        if self.t_range is not None:
            t_min, t_max = self.t_range
            weight = weight * ((timesteps >= t_min) & (timesteps <= t_max)).float()
        if self.warmup_iters > 0:
            if iteration is None:
                raise ValueError('warmup_iters needs the training iteration.')
            weight = weight * min(1.0, iteration / self.warmup_iters)
        return weight

    def _select_samples(self, batch: int, device: torch.device,
                        gen: Optional[torch.Generator]
                        ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The samples that get the Jacobian term (``batch_fraction``) and the rest.

        Returns:
            tuple[Tensor | None, Tensor | None]: Indices (N,) and (B - N,) into the
            batch, or ``(None, None)`` when every sample is selected.
        """
        num_selected = max(1, int(round(self.batch_fraction * batch)))
        if num_selected == batch:
            return None, None
        order = torch.randperm(batch, generator=gen, device=device)
        return order[:num_selected], order[num_selected:]

    def _projection_batch(self, x: Tensor, selected: Optional[Tensor],
                          directions: Optional[Tensor], student_fn, teacher_fn
                          ) -> Tuple[Optional[Tensor], Tensor, Optional[Tensor]]:
        """The batch of the Jacobian pass: each selected sample once per projection.

        Args:
            x (Tensor): The full batch (B, ...).
            selected (Tensor, optional): Selected sample indices (N,); None for all.
            directions (Tensor, optional): Caller-given directions (K, B, ...).
            student_fn, teacher_fn: Checked to accept ``batch_index`` when the pass
                runs another batch than x.

        Returns:
            tuple: ``batch_index`` (K*N,) of the rows into x (None when the pass runs x
            itself), the inputs (K*N, ...) and their directions (K*N, ...) or None;
            rows are projection-major.
        """
        num_proj = self.num_projections
        if selected is None and num_proj == 1:
            repeat_index, x_projected = None, x
        else:
            rows = torch.arange(x.shape[0], device=x.device) if selected is None else selected
            repeat_index = rows.repeat(num_proj)
            x_projected = x[repeat_index]
            for fn, role in ((student_fn, 'student'), (teacher_fn, 'teacher')):
                _require_batch_index(fn, role, num_proj, self.batch_fraction)
        if directions is None:
            return repeat_index, x_projected, None
        selected_directions = directions if selected is None else directions[:, selected]
        return repeat_index, x_projected, selected_directions.reshape(-1, *x.shape[1:])

    def _reduce(self, term: Tensor, scale: Optional[Tensor], weight: Optional[Tensor],
                selected: Optional[Tensor], batch: int) -> Tensor:
        """Scales, averages over the K projections, weights and reduces ``term`` (K*N,)."""
        num_proj = self.num_projections
        num_selected = batch if selected is None else selected.numel()
        if scale is not None and self.form != 'log_ratio':  # it cancels in a log ratio
            selected_scale = scale if selected is None else scale[selected]
            factor = selected_scale.to(term.dtype).pow(2).repeat(num_proj)
            term = term * (factor.pow(2) if self.mode != 'first_order' else factor)
        per_sample = term.view(num_proj, num_selected).mean(dim=0)  # (N,)
        if weight is not None:
            per_sample = per_sample * (
                weight if selected is None else weight[selected]).to(per_sample.dtype)
        if self.reduction == 'mean':
            loss = per_sample.mean()
        else:
            loss = per_sample.sum() * (batch / num_selected)
        return self.loss_weight * loss

    def _jacobian_terms(self, student_fn, teacher_fn, x: Tensor, index: Optional[Tensor],
                        gen: Optional[torch.Generator],
                        given_v: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Runs both Jacobian products on x (N, ...) and returns outputs and terms (N,)."""
        student = _bind(student_fn, index)
        teacher = _bind(teacher_fn, index)
        if self.mode == 'vjp':
            directions: Dict[str, Tensor] = {} if given_v is None else {'v': given_v}

            def draw(out: Tensor) -> Tensor:
                # One v per sample, shared by student and teacher.
                if 'v' not in directions:
                    directions['v'] = unit_directions(out.shape, x, gen)
                elif directions['v'].shape != out.shape:
                    raise _shape_error(directions['v'].shape, out.shape)
                return directions['v']

            # Only the student's J^T v is differentiated again (double backward);
            # the teacher's single backward keeps the fast attention kernels.
            with (jacobian_safe_kernels(x.device.type)
                  if self.safe_kernels else contextlib.nullcontext()):
                student_out, student_jac = vector_jacobian_product(
                    student, x, draw, 'student', create_graph=torch.is_grad_enabled())
            teacher_out, teacher_jac = vector_jacobian_product(
                teacher, x, draw, 'teacher', create_graph=False)
        else:
            # Forward mode brings its own attention / group-norm handling (see
            # jacobian_vector_product), so no kernel selection is needed here.
            v = (unit_directions(x.shape, x, gen) if given_v is None else given_v).to(x.dtype)
            student_out, student_jac = jacobian_vector_product(student, x, v, 'student')
            with torch.no_grad():
                teacher_out, teacher_jac = jacobian_vector_product(
                    teacher, x, v, 'teacher')
        if student_out.shape != teacher_out.shape:
            raise _shape_error(student_out.shape, teacher_out.shape)
        if student_out.shape[0] != x.shape[0]:
            raise ValueError(f'student_fn returned batch size {student_out.shape[0]} for '
                             f'an input of batch size {x.shape[0]}.')
        # At least float32 before squaring: squared norms of squared norms overflow
        # fp16; float64 stays float64 (gradcheck).
        student_jac, teacher_jac = _upcast(student_jac), _upcast(teacher_jac).detach()
        if self.mode == 'first_order':
            self._last_sq_norms = None
            term = (student_jac - teacher_jac).pow(2).flatten(1).sum(1)
        else:
            student_sq = student_jac.pow(2).flatten(1).sum(1)
            teacher_sq = teacher_jac.pow(2).flatten(1).sum(1)
            # Kept (detached) only to name the culprit of a non-finite loss.
            self._last_sq_norms = (student_sq.detach(), teacher_sq)
            if self.form == 'log_ratio':
                tiny = torch.finfo(student_sq.dtype).tiny  # a zero norm is not -inf
                term = (student_sq.clamp_min(tiny).log()
                        - teacher_sq.clamp_min(tiny).log()).pow(2)
            else:
                term = (student_sq - teacher_sq).pow(2)
        return student_out, teacher_out.detach(), term

    def _check_finite(self, loss: Tensor, student_out: Tensor) -> Tensor:
        """Raises on a non-finite loss, or returns it with the culprit noted (one host
        sync per call)."""
        if bool(torch.isfinite(loss)):
            self.last_nonfinite = None
            return loss
        if not bool(torch.isfinite(student_out).all()):
            # The DSM/KD terms are poisoned too: not only the Jacobian term overflowed.
            culprit = ('the student output itself is non-finite (NaN/Inf); the model or '
                       'its inputs diverged, not only the Jacobian term')
        else:
            culprit = (f'non-finite Jacobian matching term ({loss.item()}) in mode '
                       f'{self.mode!r}; {self._diagnose()}')
        self.last_nonfinite = culprit
        if self.nonfinite == 'raise':
            raise FloatingPointError(
                f'2ndMatchLoss: {culprit}. Use scale=sigma_t, a smaller loss_weight, or '
                "nonfinite='return' and skip the update (DiffusionDistiller does).")
        return loss

    def _diagnose(self) -> str:
        norms = self._last_sq_norms
        if norms is None:
            return 'the student-teacher difference ||J_S v - J_D v||^2 overflowed'
        bad = [name for name, n in zip(('student ||J v||^2', 'teacher ||J v||^2'), norms)
               if not bool(torch.isfinite(n).all())]
        return (f'non-finite {" and ".join(bad)}' if bad else
                'the squared difference of squared norms overflowed')

    def _check_directions(self, directions: Optional[Tensor], x: Tensor) -> Optional[Tensor]:
        """Validates caller-given directions; returns them as (K, B, ...) or None."""
        if directions is None:
            return None
        expected = (self.num_projections, *x.shape)
        if self.num_projections == 1 and tuple(directions.shape) == tuple(x.shape):
            directions = directions.unsqueeze(0)
        if tuple(directions.shape) != expected:
            raise ValueError(f'directions must have shape (K, B, ...) = {expected} (or the '
                             f'shape of x when K = 1), got {tuple(directions.shape)}.')
        return directions.detach().to(x.device)

    @staticmethod
    def _per_sample(value: Optional[Tensor], name: str, x: Tensor) -> Optional[Tensor]:
        """Validates an optional (B,) per-sample tensor."""
        if value is None:
            return None
        value = torch.as_tensor(value, device=x.device)
        if value.shape != (x.shape[0], ):
            raise ValueError(f'{name} must have shape (B,) = ({x.shape[0]},), got '
                             f'{tuple(value.shape)}.')
        return value.detach()


def _check_t_range(t_range: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """Validates ``t_range`` as (t_min, t_max) with 0 <= t_min <= t_max."""
    if t_range is None:
        return None
    if len(t_range) != 2 or not 0 <= int(t_range[0]) <= int(t_range[1]):
        raise ValueError('t_range must be (t_min, t_max) with 0 <= t_min <= t_max, '
                         f'got {t_range!r}.')
    return int(t_range[0]), int(t_range[1])


def _upcast(tensor: Tensor) -> Tensor:
    """float32 for reduced-precision tensors, unchanged otherwise."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _bind(fn: Callable[..., Tensor], index: Optional[Tensor]) -> Callable[[Tensor], Tensor]:
    """fn as a function of x only; passes ``batch_index`` when the batch differs."""
    if index is None:
        return fn
    return lambda x: fn(x, batch_index=index)


def _require_batch_index(fn: Callable[..., Tensor], role: str, num_projections: int,
                         batch_fraction: float) -> None:
    """Raises TypeError when fn cannot receive ``batch_index``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.name == 'batch_index' or p.kind is inspect.Parameter.VAR_KEYWORD
           for p in params):
        return
    raise TypeError(
        f'{role}_fn takes no `batch_index` keyword, but num_projections='
        f'{num_projections} / batch_fraction={batch_fraction} make the loss evaluate a '
        'sub-batch. Accept it and index per-sample time steps / conditioning, e.g. '
        '`lambda x, batch_index=None: net(x, t if batch_index is None else t[batch_index])`.')


def _shape_error(student_shape, teacher_shape) -> ValueError:
    return ValueError(f'student_fn returned shape {tuple(student_shape)} but teacher_fn '
                      f'{tuple(teacher_shape)}; both must predict the same quantity.')
