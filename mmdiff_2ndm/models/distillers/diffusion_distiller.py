"""Teacher -> student finetuning of (pruned) diffusion denoisers: DSM + KD + 2ndMatch."""
import contextlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import get_dist_info
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import get_state_dict
from torch import Tensor, nn

from mmagic.models.utils import build_module
from mmagic.registry import DIFFUSION_SCHEDULERS, MODELS
from mmagic.structures import DataSample

from ...utils.state_dict import check_keys, check_shapes
from ..denoisers import run_denoiser, strip_model_wrappers, unwrap_denoiser
from ..feature_recorder import FeatureRecorder
from ..losses.loss_inputs import FORWARD_RUNNER_INPUT, TEACHER_INPUTS, loss_inputs
from ..losses.squared_error import REDUCTIONS, squared_error
from ..sampling import LatentCodec, ddim_like
from . import batch_fields
from .batch_fields import Samples
from .builders import (DEPRECATED_JACOBIAN_ARGS, CkptType, ModelType, build_losses,
                       build_student, build_teacher, frozen)
from .conditioner import Conditioner
from .noise_schedule import dsm_target, noise_sigmas
from .sampler import DistillerSampler, SamplingNets
from .student_update import (StepGuard, average_gradients, loss_optim_wrapper,
                             student_optim_wrapper)
from .training_draws import Draws, TrainingDraws, mix_seed
from .training_state import TrainingState
from .validation import (check_at_least, check_choice, check_int, check_output_shape,
                         check_probability)

FEATURE_INPUTS = ('student_feats', 'teacher_feats')


@MODELS.register_module()
class DiffusionDistiller(BaseModel):
    """Finetunes a (pruned) student denoiser against a frozen dense teacher.

    Per iteration (:meth:`train_step`): encode images (:class:`LatentCodec`), draw
    timesteps, noise and directions (:class:`TrainingDraws`), noise the input with the
    training scheduler, then sum the losses, an open set ``losses=dict(name=cfg)``
    logged as ``loss_<name>``: e.g. ``dsm`` (:class:`DSMLoss`, against the scheduler's
    target), ``kd`` (:class:`KDLoss`, against the teacher), ``feat``
    (:class:`FeatureKDLoss`, intermediate features) and ``jacobian`` (``2ndMatchLoss``,
    which also returns both networks' outputs, so that each network runs one forward
    per iteration). Each loss declares the inputs it consumes (``loss_inputs.py``);
    each input is computed once. Labels and prompts become conditions in
    :class:`Conditioner`; images are sampled by :class:`DistillerSampler`.

    Note:
        Only ``student`` is optimised, with MMagic's multi-optimizer constructor keyed by
        the submodule name::

            optim_wrapper = dict(constructor='MultiOptimWrapperConstructor',
                                 student=dict(type='OptimWrapper',
                                              optimizer=dict(type='AdamW', lr=2e-4)))

        Distributed training: MMagic's default ``MMSeparateDistributedDataParallel``
        (gradients averaged by :func:`average_gradients`). Plain DDP
        (``forward(mode='loss')``) bypasses ``train_step``, and with it the EMA update
        and the step guard: use ``ExponentialMovingAverageHook``. Checkpoint keys do not
        depend on the number of processes (:meth:`state_dict`). Keep
        ``randomness=dict(diff_rank_seed=True)``, or set ``per_sample_noise_seed``.

    Args:
        teacher (dict | nn.Module, optional): Teacher denoiser config (``DenoisingUnet``,
            or a diffusers model through MMagic's wrapper, e.g.
            ``dict(type='UNet2DModel', from_pretrained=<local folder>)``) or module.
            None trains ``student`` from scratch with DSM alone.
        noise_scheduler (dict): Training scheduler, e.g. ``dict(type='DDPMScheduler')``;
            its ``prediction_type`` sets the DSM target.
        teacher_ckpt (str | dict, optional): MMEngine checkpoint of the teacher, or
            ``dict(filename=..., prefix='student.model.')`` for a sub-state-dict
            (loaded strictly). Defaults to None (weights from ``from_pretrained``).
        student (dict | nn.Module, optional): Student config/module. Defaults to None:
            a copy of the teacher (see :func:`build_student`).
        student_ckpt (str | dict, optional): Like ``teacher_ckpt``. Defaults to None.
        test_scheduler (dict, optional): Sampling scheduler. Defaults to None: DDIM with
            the training scheduler's config.
        num_inference_steps (int): Sampling steps. Defaults to 100 (authors' DDIM).
        losses (dict, optional): Name -> loss config (or module, or None: off), any
            names and any registered losses; ``dsm``, ``kd`` and ``jacobian`` may leave
            out ``type``. See :func:`build_losses` and ``models/losses/loss_inputs.py``.
            Defaults to None: ``dsm`` and ``kd`` with weight 1.
        jacobian_scale (str, optional): Deprecated: ``scale`` of the ``2ndMatchLoss``
            config. Defaults to None.
        jacobian_t_range (Sequence[int], optional): Deprecated: ``t_range`` of the
            ``2ndMatchLoss`` config. Defaults to None.
        jacobian_warmup_iters (int, optional): Deprecated: ``warmup_iters`` of the
            ``2ndMatchLoss`` config. Defaults to None.
        pixel_reduction (str): ``'sum'`` (over C, H, W, mean over the batch; the
            authors') or ``'mean'``, the default reduction of DSM and KD. Defaults to
            ``'sum'``.
        antithetic_timesteps (bool): Pair t with ``T-1-t``. Defaults to True.
        per_sample_noise_seed (int, optional): Ties every draw to the sample
            (:meth:`TrainingDraws.per_sample`); needs ``batch_fraction=1`` in the
            Jacobian loss. Defaults to None (global RNG).
        ema (dict, optional): Student EMA config (:class:`TrainingState`), e.g.
            ``dict(type='WarmupExponentialMovingAverage', momentum=1e-3)``; updated in
            ``train_step``. Defaults to None (no EMA).
        sample_with_ema (bool): Sample with the EMA when the caller does not say which
            model. Defaults to True.
        max_consecutive_skips (int): Non-finite updates skipped in a row before
            ``FloatingPointError`` (:class:`StepGuard`). Defaults to 10.
        vae (dict | nn.Module, optional): Frozen VAE for latent diffusion. Defaults to
            None (pixel space).
        text_encoder (str | dict | nn.Module, optional): Frozen text encoder; a string
            is a local ``CLIPTextModel`` folder. Defaults to None.
        tokenizer (str, optional): Local tokenizer folder, required with
            ``text_encoder``. Defaults to None.
        class_embedder (dict | nn.Module, optional): Frozen label table for
            cross-attention class conditioning (CompVis LDM-4). Defaults to None.
        num_classes (int, optional): Classes of class conditioning (the null label is
            ``num_classes``); read from DiT or ``class_embedder`` when None.
        label_drop_prob (float): Probability of the null label (empty prompt) in
            training, shared by teacher and student. Defaults to 0.
        guidance_scale (float): Classifier-free guidance scale for sampling (1: none).
            Defaults to 1.
        sample_prompts (Sequence[str], optional): Prompts cycled for text-conditioned
            sampling. Defaults to None.
        sample_shape (Sequence[int], optional): (C, H, W) of the sampled noise.
            Defaults to None (read from the teacher's config).
        data_preprocessor (dict, optional): Defaults to ``DiffusionDataPreprocessor``
            (give ``output_channel_order='RGB'`` for RGB-trained teachers).
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 teacher: Optional[ModelType],
                 noise_scheduler: ModelType,
                 teacher_ckpt: CkptType = None,
                 student: Optional[ModelType] = None,
                 student_ckpt: CkptType = None,
                 test_scheduler: Optional[ModelType] = None,
                 num_inference_steps: int = 100,
                 losses: Optional[dict] = None,
                 jacobian_scale: Optional[str] = None,
                 jacobian_t_range: Optional[Sequence[int]] = None,
                 jacobian_warmup_iters: Optional[int] = None,
                 pixel_reduction: str = 'sum',
                 antithetic_timesteps: bool = True,
                 per_sample_noise_seed: Optional[int] = None,
                 ema: Optional[dict] = None,
                 sample_with_ema: bool = True,
                 max_consecutive_skips: int = 10,
                 vae: Optional[ModelType] = None,
                 text_encoder: Optional[Union[str, ModelType]] = None,
                 tokenizer: Optional[str] = None,
                 class_embedder: Optional[ModelType] = None,
                 num_classes: Optional[int] = None,
                 label_drop_prob: float = 0.0,
                 guidance_scale: float = 1.0,
                 sample_prompts: Optional[Sequence[str]] = None,
                 sample_shape: Optional[Sequence[int]] = None,
                 data_preprocessor: Optional[dict] = dict(type='DiffusionDataPreprocessor'),
                 init_cfg: Optional[dict] = None) -> None:
        if isinstance(data_preprocessor, dict):
            # MMagic's registry, so that building outside an 'mmagic'-scoped Runner works
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        label_drop_prob = check_probability('label_drop_prob', label_drop_prob)
        self.pixel_reduction = check_choice('pixel_reduction', pixel_reduction, REDUCTIONS)
        self.per_sample_noise_seed = check_int('per_sample_noise_seed',
                                               per_sample_noise_seed, 0, optional=True)
        num_inference_steps = check_at_least('num_inference_steps', num_inference_steps, 1)
        self.step_guard = StepGuard(check_int(
            'max_consecutive_skips', max_consecutive_skips, 1,
            hint=' (1: raise at the first non-finite step)'))
        self._checked_optimizer = None
        # the modules and flags the last full switch left (train()'s early return)
        self._modes_left: Optional[List[Tuple[nn.Module, bool]]] = None
        self._sampling_calls = 0  # val_step calls: seeds each call's fork of the RNG
        legacy = dict(jacobian_scale=jacobian_scale, jacobian_t_range=jacobian_t_range,
                      jacobian_warmup_iters=jacobian_warmup_iters)
        self.losses = nn.ModuleDict(build_losses(
            losses, self.pixel_reduction,
            {k: v for k, v in legacy.items() if k in DEPRECATED_JACOBIAN_ARGS and v is not None}))
        self._loss_inputs = {name: loss_inputs(loss, name) for name, loss in self.losses.items()}
        self._check_feature_losses()
        teacher_losses = [name for name, inputs in self._loss_inputs.items()
                          if set(inputs.values()) & set(TEACHER_INPUTS)]
        self.teacher = build_teacher(teacher, teacher_ckpt, student, teacher_losses)
        self.student = build_student(student, student_ckpt, self.teacher)
        self.pruning_record: Optional[dict] = None
        self._bind_losses()
        self.noise_scheduler = build_module(noise_scheduler, DIFFUSION_SCHEDULERS)
        if test_scheduler is None:
            test_scheduler = ddim_like(self.noise_scheduler)
        self.test_scheduler = build_module(test_scheduler, DIFFUSION_SCHEDULERS)
        self.draws = TrainingDraws(self.noise_scheduler.config.num_train_timesteps,
                                   antithetic_timesteps)
        self.vae = frozen(build_module(vae, MODELS)) if vae is not None else None
        self.codec = LatentCodec(self.vae)
        nets = self._sampling_nets()
        self.conditioner = Conditioner(
            nets.reference, [n for n in (self.teacher, self.student) if n is not None],
            text_encoder, tokenizer, class_embedder, num_classes, label_drop_prob,
            sample_prompts)
        self.tokenizer = self.conditioner.tokenizer
        self.text_encoder = self.conditioner.text_encoder
        self.class_embedder = self.conditioner.class_embedder
        self.sampler = DistillerSampler(
            self.test_scheduler, self.codec, self.conditioner,
            num_inference_steps, float(guidance_scale), sample_with_ema, sample_shape)
        self.training_state = TrainingState(ema)
        self.build_student_ema()

    @property
    def forward_runner(self) -> Optional[str]:
        """Name of the loss that runs the forwards (consumes ``student_fn``), or None."""
        first = next(iter(self._loss_inputs))
        return first if FORWARD_RUNNER_INPUT in self._loss_inputs[first].values() else None

    def _consumed(self) -> set:
        """Every input field some loss consumes."""
        return {field for inputs in self._loss_inputs.values() for field in inputs.values()}

    def _check_feature_losses(self) -> None:
        """Losses that consume features must name their layers (``feature_layers``)."""
        for name, inputs in self._loss_inputs.items():
            if set(inputs.values()) & set(FEATURE_INPUTS) and \
                    not callable(getattr(self.losses[name], 'feature_layers', None)):
                raise ValueError(f'losses.{name} consumes recorded features but has no '
                                 '`feature_layers()` saying which; use FeatureKDLoss or '
                                 'give the loss bind() and feature_layers().')

    def set_pruning_record(self, record: Optional[dict]) -> None:
        """Tells the losses that the student was pruned (or rebuilt) by ``record``.

        Called by ``DiffusionPruningHook`` and ``init_distiller`` after a record is
        applied to the student; losses that depend on the student's layout (e.g.
        :class:`FeatureKDLoss`' points and kept channels) are bound anew.

        Args:
            record (dict, optional): The pruning record (plain data), None for a dense
                student.
        """
        self.pruning_record = record
        self._bind_losses()

    def _bind_losses(self) -> None:
        """Binds the losses that resolve layers against the current nets."""
        for loss in self.losses.values():
            if callable(getattr(loss, 'bind', None)):
                loss.bind(unwrap_denoiser(self.student),
                          None if self.teacher is None else unwrap_denoiser(self.teacher),
                          self.pruning_record)

    @property
    def num_classes(self) -> Optional[int]:
        """Classes of class conditioning (None: not class-conditioned)."""
        return self.conditioner.num_classes

    @property
    def num_inference_steps(self) -> int:
        """Default sampling steps (kept by :class:`DistillerSampler`)."""
        return self.sampler.num_inference_steps

    @property
    def guidance_scale(self) -> float:
        """Default classifier-free guidance scale, 1: none (kept by
        :class:`DistillerSampler`)."""
        return self.sampler.guidance_scale

    @property
    def sample_prompts(self) -> Optional[List[str]]:
        """Prompts cycled for sampling, None without (kept by :class:`Conditioner`)."""
        return self.conditioner.sample_prompts

    def build_student_ema(self) -> None:
        """Builds ``student_ema`` from the ``ema`` config, or points an existing one at
        the current (e.g. pruned) student, keeping its settings and step count."""
        ema = self.training_state.ema_of(self._bare_student(),
                                         getattr(self, 'student_ema', None))
        if ema is not None:
            self.student_ema = ema

    def _bare_student(self) -> nn.Module:
        """The student without DDP wrappers (every layer: re-wrapping after pruning may
        nest them)."""
        return strip_model_wrappers(self.student)

    def state_dict(self, *args, destination=None, prefix: str = '', keep_vars: bool = False):
        """The state without DDP wrapper prefixes (``student.model.*``, never
        ``student.module.model.*``).

        ``MMSeparateDistributedDataParallel`` wraps ``student`` in place and the Runner
        saves ``model.state_dict()`` as is, while mmengine's loader strips wrappers
        before matching keys: without this a distributed run's checkpoint would
        silently fail to load on resume.
        """
        if args:  # torch's deprecated positional form (destination, prefix, keep_vars)
            return super().state_dict(*args, destination=destination, prefix=prefix,
                                      keep_vars=keep_vars)
        return get_state_dict(self, destination=destination, prefix=prefix,
                              keep_vars=keep_vars)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Refuses a state dict that does not fit key for key and shape for shape, on
        every load path.

        MMEngine's Runner loads with ``strict=False``, which only warns about a
        mismatched shape, a missing or an extra key: a pruned checkpoint loaded without
        ``DiffusionPruningHook`` would be finetuned or scored with the dense
        initialisation, a checkpoint of another config with some weights left as built.
        The hook rebuilds the pruned shapes earlier (``after_load_checkpoint``), so its
        loads pass.
        """
        expected = {key: list(value.shape)
                    for key, value in get_state_dict(self, keep_vars=True).items()}
        check_shapes(expected, state_dict, prefix=prefix, what='The checkpoint')
        check_keys(expected, state_dict, prefix=prefix, what='The checkpoint',
                   hint='Load a checkpoint of this config (same teacher, student, EMA and '
                        'losses); for a denoiser alone use teacher_ckpt / student_ckpt, '
                        "which take dict(filename=..., prefix='student.model.').")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> 'DiffusionDistiller':
        """Sets train mode on the student only; frozen networks stay in eval.

        MMEngine's loop calls this before every iteration. When every module is still the
        one the last call left, in the mode it left it (nothing was added, replaced or
        switched since), the call would change nothing and returns at once: setting the
        flags of every module of the teacher, student and EMA again cost about 5 % of a
        batch-2 iteration of the digits student on the CPU
        (``tools/benchmark_host_overhead.py``).
        """
        if self.training == mode and self._modes_left == module_modes(self):
            return self
        self.set_modes(mode)
        self._modes_left = module_modes(self)
        return self

    def set_modes(self, mode: bool = True) -> 'DiffusionDistiller':
        """The full mode switch, :meth:`train` without its early return: every module in
        ``mode``, then the frozen networks (teacher, VAE, text encoder, class table) back in
        eval."""
        super().train(mode)
        for module in (self.teacher, self.vae, self.text_encoder, self.class_embedder):
            if module is not None:
                module.eval()
        return self

    # ------------------------------------------------------------------ training
    def train_step(self, data: dict,
                   optim_wrapper: Union[OptimWrapperDict, OptimWrapper]) -> Dict[str, Tensor]:
        """One optimisation step of the student (DSM + KD + Jacobian matching).

        ``update_params``' steps, with the student's gradients averaged over the ranks
        between backward and step, and the step guard's skip of a non-finite update.

        Args:
            data (dict): A dataloader batch (images in ``inputs``; labels in
                ``data_samples.gt_label``, prompts in ``data_samples.prompt``).
            optim_wrapper (OptimWrapperDict | OptimWrapper): With a key
                ``'student'``, or a single wrapper over the student's parameters.

        Returns:
            dict: Log variables (``loss``, ``loss_dsm``, ``loss_kd``, ``loss_jacobian``,
            ``nonfinite_skip``: 1 when the step guard skipped this update, else 0).
        """
        wrapper = student_optim_wrapper(optim_wrapper, self.student, self._checked_optimizer)
        self._checked_optimizer = wrapper.optimizer
        losses_wrapper = loss_optim_wrapper(optim_wrapper, self.losses)
        data = self.data_preprocessor(data, True)
        with wrapper.optim_context(self.student):
            losses = self.compute_losses(data['inputs'], data.get('data_samples'))
            parsed_loss, log_vars = self.parse_losses(losses)
        wrapper.backward(wrapper.scale_loss(parsed_loss))
        update = wrapper.should_update()
        if update:
            average_gradients(self._bare_student())
            if losses_wrapper is not None:
                average_gradients(self.losses)
        nonfinite, skip = self.step_guard.check(losses, wrapper,
                                                self._bare_student().parameters(), update)
        if update:
            for each in (wrapper, losses_wrapper):
                if each is not None:
                    if not skip:
                        each.step()
                    each.zero_grad()
        # Counts the step; the EMA is not updated on a skipped update.
        self.training_state.end_step(self._bare_student(), getattr(self, 'student_ema', None),
                                     not (nonfinite or skip))
        if update:
            runner = self.forward_runner
            self.step_guard.count(
                skip, getattr(self.losses[runner], 'last_nonfinite', None) if runner else None)
        log_vars['nonfinite_skip'] = torch.tensor(float(skip))
        return log_vars

    def forward(self,
                inputs: Union[Tensor, dict],
                data_samples: Optional[DataSample] = None,
                mode: Optional[str] = None):
        """``mode='loss'``: the loss dict (plain DDP); otherwise generated samples.

        Args:
            inputs (Tensor | dict): Preprocessed images for ``'loss'``; sampling
                arguments (see :meth:`generate`) otherwise.
            data_samples (DataSample, optional): Labels/prompts.
            mode (str, optional): ``'loss'``, or anything else to sample.

        Returns:
            dict | list[DataSample]: Losses, or one ``DataSample`` per image.
        """
        if mode == 'loss':
            return self.compute_losses(inputs, data_samples)
        return self.generate(inputs, data_samples)

    def compute_losses(self, inputs: Union[Tensor, dict],
                       data_samples: Optional[DataSample]) -> Dict[str, Tensor]:
        """The weighted losses for one preprocessed batch.

        Args:
            inputs (Tensor | dict): Images (B, 3, H, W) in the preprocessor's range,
                or a dict holding them under ``'img'``.
            data_samples (DataSample, optional): Stacked samples with labels/prompts.

        Returns:
            dict: ``loss_<name>`` per loss: the one that runs the forwards first, the
            others in config order.
        """
        x_0 = self.codec.encode(batch_fields.images(inputs, data_samples))
        timesteps, noise, directions, drop_u = self._training_draws(x_0, data_samples)
        condition = self.conditioner.training_condition(
            data_samples, x_0.shape[0], x_0.device, drop_u=drop_u)
        x_t = self.noise_scheduler.add_noise(x_0, noise, timesteps)
        consumed = self._consumed()
        fields = dict(x_0=x_0, noise=noise, x_t=x_t, timesteps=timesteps,
                      condition=condition, directions=directions,
                      iteration=self.training_state.iteration())
        if 'sigma_t' in consumed:
            fields['sigma_t'] = noise_sigmas(self.noise_scheduler, timesteps)
        if 'target' in consumed:
            fields['target'] = dsm_target(self.noise_scheduler, x_0, noise, timesteps)
        losses = self._run_forwards(fields)
        for name, inputs_of in self._loss_inputs.items():
            if name != self.forward_runner:
                losses[f'loss_{name}'] = self.losses[name](
                    **{arg: fields[field] for arg, field in inputs_of.items()})
        return losses

    def _run_forwards(self, fields: dict) -> Dict[str, Tensor]:
        """Student and teacher forwards on x_t, once each, with the features recorded.

        With a loss that runs the forwards (the Jacobian term) its pass doubles as both;
        otherwise the teacher runs under ``no_grad``, and only when a loss consumes its
        output or features. Adds ``student_out``, ``teacher_out`` (None when not
        needed), ``student_feats`` / ``teacher_feats`` and the nets as functions of x_t
        to ``fields``.

        Returns:
            dict: ``{'loss_<runner>': ...}``, empty without a runner.
        """
        x_t, timesteps, condition = fields['x_t'], fields['timesteps'], fields['condition']
        student_layers, teacher_layers = self._feature_layers()
        losses = {}
        with contextlib.ExitStack() as stack:
            # The bare student: its DDP wrapper's reducer must not see the Jacobian
            # passes (see average_gradients).
            student_rec = stack.enter_context(FeatureRecorder(
                self._bare_student(), student_layers)) if student_layers else None
            teacher_rec = stack.enter_context(FeatureRecorder(
                self.teacher, teacher_layers, detach=True)) if teacher_layers else None
            fields['student_fn'] = _denoiser_fn(self._bare_student(), timesteps, condition,
                                                student_rec)
            fields['teacher_fn'] = _denoiser_fn(self.teacher, timesteps, condition,
                                                teacher_rec)
            runner = self.forward_runner
            if runner is not None:
                out = self.losses[runner](
                    **{arg: fields[field] for arg, field in self._loss_inputs[runner].items()},
                    return_outputs=True)
                student_out, teacher_out = out.student_out, out.teacher_out
                losses[f'loss_{runner}'] = out.loss
            else:
                student_out = fields['student_fn'](x_t)
                teacher_out = None
                if self.teacher is not None and set(TEACHER_INPUTS) & self._consumed():
                    with torch.no_grad():
                        teacher_out = fields['teacher_fn'](x_t)
        batch = x_t.shape[0]
        fields['student_feats'] = student_rec.features(batch) if student_rec else {}
        fields['teacher_feats'] = teacher_rec.features(batch) if teacher_rec else {}
        check_output_shape(student_out, x_t, 'student')
        if teacher_out is not None:
            check_output_shape(teacher_out, x_t, 'teacher')
        fields['student_out'], fields['teacher_out'] = student_out, teacher_out
        return losses

    def _feature_layers(self) -> Tuple[List[str], List[str]]:
        """The student and teacher layers some loss consumes the features of."""
        student_layers, teacher_layers = [], []
        for name, inputs_of in self._loss_inputs.items():
            if set(inputs_of.values()) & set(FEATURE_INPUTS):
                s_names, t_names = self.losses[name].feature_layers()
                student_layers += s_names
                teacher_layers += t_names
        return student_layers, teacher_layers

    def pruning_loss(self, data_batch: dict, timesteps: Tensor) -> Tensor:
        """Unweighted student DSM loss of a raw dataloader batch at given timesteps.

        Args:
            data_batch (dict): A batch as the dataloader yields it.
            timesteps (Tensor): Per-sample timesteps (B,) (or one, broadcast).

        Returns:
            Tensor: Scalar DSM loss (``pixel_reduction`` applies), differentiable
            w.r.t. the student's parameters.
        """
        data = self.data_preprocessor(data_batch, True)
        x_0 = self.codec.encode(batch_fields.images(data['inputs'], data.get('data_samples')))
        batch = x_0.shape[0]
        condition = self.conditioner.training_condition(data.get('data_samples'), batch,
                                                        x_0.device, drop=False)
        timesteps = torch.as_tensor(timesteps, device=x_0.device).long().reshape(-1)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(batch)
        if timesteps.numel() != batch:
            raise ValueError(f'timesteps has {timesteps.numel()} entries for a batch of '
                             f'{batch}; pass one per sample or a single value.')
        noise = torch.randn_like(x_0)
        x_t = self.noise_scheduler.add_noise(x_0, noise, timesteps)
        # Bare student: rank 0 alone computes gradient importances under DDP, a
        # wrapped forward would arm a gradient all-reduce the other ranks never join.
        prediction = run_denoiser(self._bare_student(), x_t, timesteps, condition)
        check_output_shape(prediction, x_t, 'student')
        target = dsm_target(self.noise_scheduler, x_0, noise, timesteps)
        return squared_error(prediction, target, self.pixel_reduction)

    def _training_draws(self, x_0: Tensor, data_samples: Samples) -> Draws:
        """This iteration's draws: tied to the samples, or from the global RNG."""
        if self.per_sample_noise_seed is not None:  # tied to each sample's sample_idx
            runner = self.forward_runner
            return self.draws.per_sample(
                x_0, batch_fields.sample_indices(data_samples, x_0.shape[0]),
                self.per_sample_noise_seed, self.training_state.iteration(),
                getattr(self.losses[runner], 'num_projections', None) if runner else None)
        return Draws(self.draws.timesteps(x_0.shape[0], x_0.device), torch.randn_like(x_0),
                     None, None)

    # ------------------------------------------------------------------ sampling
    def val_step(self, data: dict) -> List[DataSample]:
        """Samples images for MMagic's generative metrics and visualisation hooks.

        Runs on a fork of torch's RNG: validation between training iterations leaves
        the training draws (and so a resumed run's) unchanged. The fork is seeded per
        call from (``torch.initial_seed()``, call count, rank): a fork of the unchanged
        state alone would give every batch the same noise, and FID would score copies
        of one batch.
        """
        devices = ([torch.cuda.current_device()]
                   if torch.cuda.is_available() and torch.cuda.is_initialized() else [])
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(mix_seed(torch.initial_seed(), self._sampling_calls,
                                       get_dist_info()[0]))
            self._sampling_calls += 1
            data = self.data_preprocessor(data)
            return self.generate(data['inputs'], data.get('data_samples'))

    def test_step(self, data: dict) -> List[DataSample]:
        """Same as :meth:`val_step`."""
        return self.val_step(data)

    def generate(self, inputs: Union[Tensor, dict],
                 data_samples: Optional[DataSample] = None) -> List[DataSample]:
        """Samples a batch with the test scheduler (:class:`DistillerSampler`).

        Args:
            inputs (Tensor | dict): Noise (B, C, H, W), or a dict with any of
                ``num_batches``, ``noise``, ``sample_model`` ('orig', 'ema',
                'teacher') and ``sample_kwargs`` (``num_inference_steps``,
                ``guidance_scale``, ``labels``, ``prompt``, ``with_teacher``: also
                sample the teacher from the same noise into ``teacher_img``).
            data_samples (DataSample, optional): Labels/prompts to condition on.

        Returns:
            list[DataSample]: ``fake_img`` (3, H, W) in [0, 255], destructed by the
            data preprocessor, plus ``sample_model`` (and ``teacher_img``; ``prompt``,
            the prompt sampled from, for text-conditioned sampling).
        """
        return self.sampler.generate(inputs, data_samples, self._sampling_nets(),
                                     self.data_preprocessor, self.noise_fn, self.sample)

    def _sampling_nets(self) -> SamplingNets:
        """The student, its EMA (None without one) and the teacher, as they are now."""
        return SamplingNets(self.student, getattr(self, 'student_ema', None), self.teacher)

    def noise_fn(self, noise: Optional[Tensor] = None, num_batches: int = 1) -> Tensor:
        """Initial sampling noise (B, C, H, W); a given tensor is returned as is (used by
        ``VisualizationHook`` for fixed inputs)."""
        return self.sampler.noise(noise, num_batches, self._sampling_nets().reference,
                                  self.data_preprocessor.device)

    def sample(self, net: nn.Module, noise: Tensor, condition: Optional[Tensor] = None,
               uncondition: Optional[Tensor] = None, num_inference_steps: Optional[int] = None,
               guidance_scale: float = 1.0) -> Tensor:
        """Images (B, 3, H, W) sampled by ``net`` from ``noise``
        (:meth:`DistillerSampler.sample`)."""
        return self.sampler.sample(net, noise, condition, uncondition, num_inference_steps,
                                   guidance_scale)


def _denoiser_fn(net: Optional[nn.Module], timesteps: Tensor, condition: Optional[Tensor],
                 recorder: Optional[FeatureRecorder] = None) -> Callable[..., Tensor]:
    """``net`` as a function of x_t for the 2ndMatch loss; with ``batch_index`` (N,) it
    runs the sub-batch of those rows (their timesteps and condition), and tells the
    feature ``recorder`` which rows it runs."""

    def fn(x: Tensor, batch_index: Optional[Tensor] = None) -> Tensor:
        with recorder.rows(batch_index) if recorder else contextlib.nullcontext():
            if batch_index is None:
                return run_denoiser(net, x, timesteps, condition)
            return run_denoiser(net, x, timesteps[batch_index],
                                None if condition is None else condition[batch_index])

    return fn


def module_modes(root: nn.Module) -> List[Tuple[nn.Module, bool]]:
    """Every module under ``root`` (itself included) with its ``training`` flag, in a fixed
    order. A list of the modules themselves, not their ids, so that a module replaced by a
    new one never compares equal to it.

    Walks ``_modules`` with a stack: ``named_modules``' nested generators take four times
    as long.
    """
    modes, stack = [], [root]
    while stack:
        module = stack.pop()
        modes.append((module, module.training))
        stack.extend(child for child in module._modules.values() if child is not None)
    return modes
