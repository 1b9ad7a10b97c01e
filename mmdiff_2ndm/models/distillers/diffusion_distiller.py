"""Teacher -> student finetuning of (pruned) diffusion denoisers: DSM + KD + 2ndMatch."""
import copy
import inspect
import logging
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine import print_log
from mmengine.dist import all_reduce, all_reduce_params, get_dist_info, get_world_size
from mmengine.logging import MessageHub
from mmengine.model import BaseAveragedModel, BaseModel, BaseModule
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_with_prefix, \
    get_state_dict, load_state_dict
from torch import Tensor, nn

from mmagic.models.utils import build_module, get_valid_num_batches
from mmagic.registry import DIFFUSION_SCHEDULERS, MODELS
from mmagic.structures import DataSample

from ...pruning.record import check_shapes, check_state_dict_shapes
from ...utils import checkpoint as _safe_checkpoint  # noqa: F401  (registers the safe loader)
from ..averaged_model import retarget_average
from ..denoisers import (denoiser_family, example_denoiser_inputs, run_denoiser,
                         strip_model_wrappers, unwrap_denoiser)
from ..losses import unit_directions

ModelType = Union[dict, nn.Module]
CkptType = Union[str, dict, None]

LOSS_KEYS = ('dsm', 'kd', 'jacobian')
PIXEL_REDUCTIONS = ('sum', 'mean')
JACOBIAN_SCALES = (None, 'sigma')
SAMPLE_MODELS = ('orig', 'ema', 'teacher')


@MODELS.register_module()
class DiffusionDistiller(BaseModel):
    """Finetunes a (pruned) student denoiser against a frozen dense teacher.

    Per iteration (``train_step``): encode images (frozen VAE for latent models),
    draw timesteps (antithetic pairs ``(t, T-1-t)`` by default) and noise, noise the
    input with the training scheduler, then sum the enabled losses

    * ``loss_dsm``: ``||eps_S(x_t) - target||^2`` (target: noise, or velocity for
      v-prediction, or x_0 for sample-prediction schedulers);
    * ``loss_kd``: ``||eps_S(x_t) - eps_D(x_t)||^2``;
    * ``loss_jacobian``: the ``2ndMatchLoss`` module, which also returns both
      networks' outputs so that each network runs one forward per iteration.

    Note:
        Roles and optimisation. ``teacher`` (and ``vae``/``text_encoder``/
        ``class_embedder``) are frozen: ``requires_grad=False``, always in eval mode,
        marked initialised so that ``init_weights`` never overwrites them, and therefore
        left unwrapped by ``MMSeparateDistributedDataParallel``. Only ``student`` is optimised. The
        documented optimizer config is MMagic's multi-optimizer constructor keyed by
        the submodule name::

            optim_wrapper = dict(constructor='MultiOptimWrapperConstructor',
                                 student=dict(type='OptimWrapper',
                                              optimizer=dict(type='AdamW', lr=2e-4)))

        For plain DDP (``MMDistributedDataParallel``, which calls
        ``forward(mode='loss')`` instead of ``train_step``) build a single wrapper over
        the student: ``dict(constructor='MultiOptimWrapperConstructor',
        modules='student', optimizer=...)``. ``train_step`` refuses an optimizer that
        holds parameters outside the student. Under plain DDP the built-in EMA update
        and the non-finite step guard do not run (``train_step`` is bypassed); use MMagic's
        ``ExponentialMovingAverageHook(module_keys='student_ema')`` there.

        ``DiffusionPruningHook`` replaces ``student`` at run start, points
        ``student_ema`` at it (:func:`retarget_average`, as :meth:`build_student_ema`
        does) and rebuilds the optimizer wrappers.

        Distributed training. Supported wrapper: MMagic's runtime default
        ``model_wrapper_cfg=dict(type='MMSeparateDistributedDataParallel',
        broadcast_buffers=False, find_unused_parameters=False)`` (on CPU, gloo with
        ``device_ids=None``: ``prepare_cpu_distributed``). It wraps ``student`` in DDP, which
        broadcasts rank 0's weights at wrap time; ``train_step`` then calls the *bare*
        student (forward-mode or double-backward Jacobian passes, the
        ``batch_fraction < 1`` second forward, none of which DDP's reducer supports:
        "marked ready twice" / stale-bucket errors, pytorch#63929, #47562) and averages
        the student's gradients over the ranks itself with one coalesced all-reduce
        between backward and step (at accumulation boundaries only: ``accumulative_counts``
        works; under ``AmpOptimWrapper`` the scaled gradients are reduced, so an inf on
        one rank makes every rank skip the step). So ``find_unused_parameters`` and
        ``static_graph`` are irrelevant (leave them False). Checkpoints have the same
        keys in one and several processes (see :meth:`state_dict`). With
        ``per_sample_noise_seed`` set (and ``batch_fraction=1``), W processes x batch B
        reproduce one process x batch W*B to float tolerance and ``--resume`` is exact.
        Without it the draws come from each rank's global RNG: keep MMagic's runtime
        ``randomness=dict(diff_rank_seed=True)`` (with ``False`` every rank draws the
        *same* timesteps and noise); ``RNGStateHook`` (added by ``tools/train.py``)
        saves and restores those states, so ``--resume`` is exact then too.

    Args:
        teacher (dict | nn.Module, optional): Teacher denoiser config (``DenoisingUnet``,
            or any diffusers model through MMagic's wrapper, e.g.
            ``dict(type='UNet2DModel', from_pretrained=<local folder>)``) or module.
            None trains ``student`` from scratch with DSM alone (plain DDPM training,
            e.g. of the dense teacher of a later run); ``kd``/``jacobian`` and sampling
            with ``'teacher'`` then raise.
        noise_scheduler (dict): Training scheduler, e.g.
            ``dict(type='DDPMScheduler', num_train_timesteps=1000)``; its
            ``prediction_type`` ('epsilon', 'v_prediction', 'sample') sets the DSM
            target.
        teacher_ckpt (str | dict, optional): MMEngine checkpoint with the teacher's
            weights, or ``dict(filename=..., prefix='student.model.')`` to take a
            sub-state-dict (keys are matched to the bare network, strictly).
            Defaults to None (weights come from ``from_pretrained``).
        student (dict | nn.Module, optional): Student config/module. Defaults to None:
            a copy of the loaded teacher (pruned later by the pruning hook). A builder
            flagged ``derives_from_teacher`` gets the built teacher as ``teacher=``, e.g.
            ``dict(type='BKSDMStudent', variant='base')`` (BK-SDM block removal).
        student_ckpt (str | dict, optional): Student weights, same format as
            ``teacher_ckpt``. Defaults to None.
        test_scheduler (dict, optional): Sampling scheduler. Defaults to None:
            ``dict(type='DDIMScheduler')`` with the training scheduler's config.
        num_inference_steps (int): Sampling steps. Defaults to 100 (authors' DDIM).
        losses (dict, optional): Keys from ``('dsm', 'kd', 'jacobian')``; a value
            ``None`` switches that loss off. ``dsm``/``kd``: ``dict(loss_weight=w)``;
            ``jacobian``: a loss config (type defaults to ``'2ndMatchLoss'``).
            Defaults to None: ``dsm`` and ``kd`` with weight 1, ``jacobian`` off.
        jacobian_scale (str, optional): None (the paper's unscaled term) or
            ``'sigma'``: pass ``sigma_t = sqrt(1 - alpha_bar_t)`` per sample as the
            loss module's ``scale`` (tames the ~1/sigma_t^4 growth at small t).
            Defaults to None.
        jacobian_t_range (Sequence[int], optional): ``(t_min, t_max)``, inclusive: the
            Jacobian term's per-sample ``weight`` is 0 for timesteps outside. Defaults
            to None (all timesteps, the paper's form).
        jacobian_warmup_iters (int): Ramp the Jacobian term's weight linearly from 0
            to 1 over this many iterations (counted from the start of the run, or of
            this model's training steps outside a Runner). Defaults to 0 (no warm-up).
        pixel_reduction (str): ``'sum'`` (sum over C, H, W, mean over the batch; the
            authors') or ``'mean'`` for the DSM and KD terms. Defaults to ``'sum'``.
        per_sample_noise_seed (int, optional): Tie every random draw of an
            iteration to the sample: timestep, noise, projection directions and the
            label/prompt dropout of dataset item ``sample_idx`` (mmengine's metainfo)
            at iteration ``i`` come from a generator seeded by
            ``(per_sample_noise_seed, i, sample_idx)``. Then W processes x batch B
            train exactly like one process x batch W*B on the same samples, and a
            resumed run repeats the uninterrupted one without saved RNG states.
            Antithetic pairs are formed by dataset index (items ``2k`` and
            ``2k + 1``) instead of batch position. Needs ``batch_fraction=1`` in the
            Jacobian loss for these guarantees (its subset is drawn per batch).
            Defaults to None (global RNG, batch-position draws).
        antithetic_timesteps (bool): Draw t for half the batch and use ``T-1-t`` for
            the other half. Defaults to True.
        ema (dict, optional): Student EMA, e.g. ``dict(momentum=1e-4, start_iter=0)``
            (MMagic's ``ExponentialMovingAverage``, the paper's fixed decay; momentum =
            1 - decay) or ``dict(type='WarmupExponentialMovingAverage', momentum=1e-3)``
            (decay ramped from 0, for runs shorter than ~10 / momentum iterations).
            Updated in ``train_step``; before ``start_iter`` it copies the student.
            Defaults to None (no EMA).
        sample_with_ema (bool): Sample with the EMA when the caller does not say
            which model. Defaults to True.
        max_consecutive_skips (int): The step guard of :meth:`train_step` skips the
            whole update (no optimizer step, no optimizer-state change, no EMA
            update) when a loss term or a student gradient is non-finite, counts it
            (log variable ``nonfinite_skip``: 1 for a skipped step) and warns; this
            many skipped updates in a row raise ``FloatingPointError`` naming the
            term. 1 raises at the first non-finite step. Gradients under a loss
            scaler (``AmpOptimWrapper``) are left to its own inf/NaN skipping.
            Defaults to 10.
        vae (dict | nn.Module, optional): Frozen VAE for latent diffusion (e.g.
            ``dict(type='AutoencoderKL', from_pretrained=<folder>)``); latents are
            scaled by ``vae.config.scaling_factor``. Defaults to None (pixel space).
        text_encoder (str | dict | nn.Module, optional): Frozen text encoder; a string
            is a local ``CLIPTextModel`` folder. Defaults to None.
        tokenizer (str, optional): Local tokenizer folder (``AutoTokenizer``);
            required with ``text_encoder``. Defaults to None.
        class_embedder (dict | nn.Module, optional): Frozen label table that turns
            class labels into cross-attention context (B, 1, D) for a class-conditional
            ``UNet2DConditionModel`` (CompVis LDM-4:
            ``dict(type='ClassEmbedder', checkpoint=...)``), shared by teacher and
            student. Defaults to None (labels go to the denoiser as they are).
        num_classes (int, optional): Number of classes for class conditioning; the
            null (unconditional) label is ``num_classes``. Read from the DiT config,
            or from ``class_embedder`` (its last row is the null label), when None.
            Defaults to None.
        label_drop_prob (float): Probability of replacing a label (prompt) by the
            null label (empty prompt) during training, shared by teacher and student
            (classifier-free guidance). Defaults to 0.
        guidance_scale (float): Classifier-free guidance scale for sampling; 1 means
            none. Defaults to 1.
        sample_prompts (Sequence[str], optional): Prompts cycled for text-conditioned
            sampling when the caller passes none. Defaults to None.
        sample_shape (Sequence[int], optional): (C, H, W) of the sampled noise.
            Defaults to None (read from the teacher's config).
        data_preprocessor (dict, optional): Defaults to ``DiffusionDataPreprocessor``
            (MMagic's ``DataPreprocessor`` that also knows the channel order of samples
            generated from noise); give ``output_channel_order='RGB'`` for teachers
            trained on RGB (every hub teacher) and pack images with ``PackInputs()``.
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
                 jacobian_warmup_iters: int = 0,
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
        if pixel_reduction not in PIXEL_REDUCTIONS:
            raise ValueError(f'pixel_reduction must be one of {PIXEL_REDUCTIONS}, '
                             f'got {pixel_reduction!r}.')
        if jacobian_scale not in JACOBIAN_SCALES:
            raise ValueError(f'jacobian_scale must be one of {JACOBIAN_SCALES}, '
                             f'got {jacobian_scale!r}.')
        if not 0.0 <= float(label_drop_prob) < 1.0:
            raise ValueError(f'label_drop_prob must be in [0, 1), got {label_drop_prob!r}.')
        if int(num_inference_steps) < 1:
            raise ValueError(f'num_inference_steps must be >= 1, got {num_inference_steps!r}.')
        self.pixel_reduction = pixel_reduction
        self.jacobian_scale = jacobian_scale
        self.jacobian_t_range = _check_t_range(jacobian_t_range)
        if int(jacobian_warmup_iters) < 0:
            raise ValueError('jacobian_warmup_iters must be >= 0, '
                             f'got {jacobian_warmup_iters!r}.')
        self.jacobian_warmup_iters = int(jacobian_warmup_iters)
        self.antithetic_timesteps = antithetic_timesteps
        if per_sample_noise_seed is not None and (
                isinstance(per_sample_noise_seed, bool)
                or not isinstance(per_sample_noise_seed, int) or per_sample_noise_seed < 0):
            raise ValueError('per_sample_noise_seed must be None or an int >= 0, '
                             f'got {per_sample_noise_seed!r}.')
        self.per_sample_noise_seed = per_sample_noise_seed
        self.label_drop_prob = float(label_drop_prob)
        self.guidance_scale = float(guidance_scale)
        self.num_inference_steps = int(num_inference_steps)
        self.sample_with_ema = sample_with_ema
        if isinstance(max_consecutive_skips, bool) or not isinstance(
                max_consecutive_skips, int) or max_consecutive_skips < 1:
            raise ValueError('max_consecutive_skips must be an int >= 1 (1: raise at the '
                             f'first non-finite step), got {max_consecutive_skips!r}.')
        self.max_consecutive_skips = max_consecutive_skips
        self.num_skipped_steps = 0  # updates skipped by the step guard, in all
        self._consecutive_skips = 0
        self._window_nonfinite: List[str] = []  # non-finite terms since the last update
        self.sample_prompts = list(sample_prompts) if sample_prompts else None
        self._next_prompt = 0
        self._sampling_calls = 0  # val_step calls: seeds each call's fork of the RNG
        self.sample_shape = tuple(sample_shape) if sample_shape else None
        self._init_losses(losses)

        self.teacher = self._build_teacher(teacher, teacher_ckpt, student)
        self.student = self._build_student(student, student_ckpt)

        self.noise_scheduler = build_module(noise_scheduler, DIFFUSION_SCHEDULERS)
        if test_scheduler is None:
            test_scheduler = _ddim_like(self.noise_scheduler)
        self.test_scheduler = build_module(test_scheduler, DIFFUSION_SCHEDULERS)

        self.vae = self._frozen(build_module(vae, MODELS)) if vae is not None else None
        self.tokenizer, self.text_encoder = self._build_text_conditioning(
            text_encoder, tokenizer)
        self.class_embedder = self._build_class_embedder(class_embedder)
        self.num_classes = self._resolve_num_classes(num_classes)

        self._ema_cfg = copy.deepcopy(ema)
        self.ema_start = 0
        self._num_train_steps = 0
        self._checked_optimizer = None
        if ema is not None:
            self.build_student_ema()

    # ------------------------------------------------------------------ building
    def _init_losses(self, losses: Optional[dict]) -> None:
        """Validates the loss config and builds the Jacobian loss module."""
        if losses is None:
            losses = dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0))
        if not isinstance(losses, dict):
            raise TypeError(f'losses must be a dict with keys from {LOSS_KEYS}, '
                            f'got {type(losses).__name__}.')
        unknown = sorted(set(losses) - set(LOSS_KEYS))
        if unknown:
            raise ValueError(f'Unknown loss key(s) {unknown} in `losses`; allowed keys are '
                             f'{list(LOSS_KEYS)} (set a value to None to switch it off).')
        if all(losses.get(k) is None for k in LOSS_KEYS):
            raise ValueError('All losses are switched off; enable at least one of '
                             f'{list(LOSS_KEYS)}.')
        self.loss_weights: Dict[str, float] = {}
        for key in ('dsm', 'kd'):
            cfg = losses.get(key)
            if cfg is None:
                continue
            if not isinstance(cfg, dict) or set(cfg) - {'loss_weight'}:
                raise ValueError(f'losses[{key!r}] must be None or dict(loss_weight=...), '
                                 f'got {cfg!r}.')
            self.loss_weights[key] = float(cfg.get('loss_weight', 1.0))
        jac_cfg = losses.get('jacobian')
        if jac_cfg is None:
            self.jacobian_loss = None
        elif isinstance(jac_cfg, nn.Module):
            self.jacobian_loss = jac_cfg
        else:
            jac_cfg = dict(jac_cfg)
            jac_cfg.setdefault('type', '2ndMatchLoss')
            # A non-finite term goes to train_step's step guard, the one place that
            # skips updates.
            jac_cfg.setdefault('nonfinite', 'return')
            self.jacobian_loss = MODELS.build(jac_cfg)

    def _build_teacher(self, teacher: Optional[ModelType], teacher_ckpt: CkptType,
                       student: Optional[ModelType]) -> Optional[nn.Module]:
        """Builds the teacher, loads its weights and freezes it (None: no teacher)."""
        if teacher is None:
            if student is None:
                raise ValueError('teacher=None needs a `student` config to train from '
                                 'scratch; give a teacher or a student.')
            needs_teacher = ['kd'] if 'kd' in self.loss_weights else []
            if self.jacobian_loss is not None:
                needs_teacher.append('jacobian')
            if needs_teacher:
                raise ValueError(f'The losses {needs_teacher} need a teacher, but '
                                 'teacher=None; switch them off (losses=dict(dsm=..., '
                                 'kd=None)) or give a teacher.')
            if teacher_ckpt is not None:
                raise ValueError('teacher_ckpt is given but teacher=None; give the teacher '
                                 'config too.')
            return None
        has_pretrained = isinstance(teacher, dict) and bool(teacher.get('from_pretrained'))
        if not isinstance(teacher, nn.Module) and not has_pretrained and teacher_ckpt is None:
            raise ValueError(
                'The teacher has no weights: give `teacher_ckpt` (an MMEngine checkpoint), '
                "`from_pretrained=<local diffusers folder>` in the teacher config, or a built "
                'module. A randomly initialised teacher cannot be distilled from.')
        model = build_module(teacher, MODELS)
        if teacher_ckpt is not None:
            _load_weights(model, teacher_ckpt, 'teacher_ckpt')
        denoiser_family(model)  # unsupported classes fail here, not mid-training
        _mark_initialised(model)
        return self._frozen(model)

    def _build_student(self, student: Optional[ModelType],
                       student_ckpt: CkptType) -> nn.Module:
        """Copies the teacher (default) or builds the configured student."""
        if student is None:
            model = copy.deepcopy(self.teacher)
        else:
            builder = student.get('type') if isinstance(student, dict) else None
            if isinstance(builder, str):
                builder = MODELS.get(builder)
            # Builders flagged `derives_from_teacher` (e.g. 'BKSDMStudent') get the teacher.
            from_teacher = bool(getattr(builder, 'derives_from_teacher', False))
            default_args = dict(teacher=self.teacher) if from_teacher else None
            model = build_module(student, MODELS, default_args=default_args)
            has_pretrained = isinstance(student, dict) and bool(student.get('from_pretrained'))
            if (student_ckpt is None and not has_pretrained and not from_teacher
                    and not isinstance(student, nn.Module)):
                print_log('The student has no checkpoint; it starts from random weights.',
                          'current')
        if student_ckpt is not None:
            _load_weights(model, student_ckpt, 'student_ckpt')
        denoiser_family(model)
        if student is None or student_ckpt is not None:
            _mark_initialised(model)
        model.requires_grad_(True)
        return model

    @staticmethod
    def _frozen(module: nn.Module) -> nn.Module:
        """Freezes a helper network: no gradients, eval mode, no re-initialisation."""
        module.requires_grad_(False)
        module.eval()
        _mark_initialised(module)
        return module

    def _build_text_conditioning(self, text_encoder, tokenizer) -> Tuple:
        """Loads the frozen tokenizer and text encoder from local folders."""
        if text_encoder is None and tokenizer is None:
            return None, None
        if text_encoder is None or tokenizer is None:
            raise ValueError('Text conditioning needs both `text_encoder` and `tokenizer` '
                             f'(got text_encoder={text_encoder!r}, tokenizer={tokenizer!r}).')
        from transformers import AutoTokenizer, CLIPTextModel
        if isinstance(tokenizer, str):
            if not osp.isdir(tokenizer):
                raise FileNotFoundError(f'tokenizer folder {tokenizer!r} does not exist.')
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        if isinstance(text_encoder, str):
            if not osp.isdir(text_encoder):
                raise FileNotFoundError(f'text_encoder folder {text_encoder!r} does not exist.')
            text_encoder = CLIPTextModel.from_pretrained(text_encoder)
        elif isinstance(text_encoder, dict):
            text_encoder = MODELS.build(text_encoder)
        return tokenizer, self._frozen(text_encoder)

    def _build_class_embedder(self, class_embedder: Optional[ModelType]
                              ) -> Optional[nn.Module]:
        """Builds the frozen label table of a class-conditional cross-attention U-Net."""
        if class_embedder is None:
            return None
        if self.text_encoder is not None:
            raise ValueError('class_embedder and text_encoder both make the cross-attention '
                             'context; give one of them.')
        if isinstance(class_embedder, dict) and not class_embedder.get('checkpoint'):
            raise ValueError(
                'class_embedder has no weights: give `checkpoint` (the class_embedder.pth '
                'written by tools/convert_compvis_ldm.py); the teacher was trained with its '
                'own table, a random one cannot be distilled from.')
        module = build_module(class_embedder, MODELS)
        if not isinstance(getattr(module, 'embedding', None), nn.Embedding):
            raise TypeError('class_embedder must hold its table as `embedding` (nn.Embedding), '
                            f'like ClassEmbedder; got {type(module).__name__}.')
        family = denoiser_family(self._reference_net())
        if family != 'unet2d_condition':
            raise ValueError('class_embedder feeds cross-attention, but the denoiser family '
                             f'is {family!r}; it needs a UNet2DConditionModel.')
        return self._frozen(module)

    def _resolve_num_classes(self, num_classes: Optional[int]) -> Optional[int]:
        """Reads the class count and takes label dropout over from DiT."""
        if self.class_embedder is not None:
            rows = int(self.class_embedder.embedding.num_embeddings)
            if num_classes is not None and int(num_classes) != rows - 1:
                raise ValueError(f'num_classes={num_classes} does not fit the class_embedder '
                                 f'({rows} rows = {rows - 1} classes + the null label).')
            return rows - 1
        net = unwrap_denoiser(self._reference_net())
        if denoiser_family(net) == 'dit':
            table = int(net.config.num_embeds_ada_norm)
            num_classes = table if num_classes is None else int(num_classes)
            # DiT drops labels inside its LabelEmbedding in train mode, independently
            # per network; teacher and student must see the same (dropped) labels for
            # KD, so the distiller drops them once and the embeddings never do.
            nets = [n for n in (self.teacher, self.student) if n is not None]
            for module in [m for n in nets for m in n.modules()]:
                if type(module).__name__ == 'LabelEmbedding':
                    module.dropout_prob = 0.0
        return num_classes

    def _reference_net(self) -> nn.Module:
        """The teacher, or the student when training without one (shapes, classes)."""
        return self.teacher if self.teacher is not None else self.student

    def build_student_ema(self) -> None:
        """Builds ``student_ema`` from the ``ema`` config, or, when it exists, points it at
        the current student (after pruning) with :func:`retarget_average`, keeping its
        settings and step count."""
        if self._ema_cfg is None:
            return
        if isinstance(getattr(self, 'student_ema', None), BaseAveragedModel):
            retarget_average(self.student_ema, self._bare_student())
            return
        cfg = copy.deepcopy(self._ema_cfg)
        cfg.setdefault('type', 'ExponentialMovingAverage')
        self.ema_start = int(cfg.pop('start_iter', 0))
        self.student_ema = MODELS.build(cfg, default_args=dict(model=self._bare_student()))

    def _bare_student(self) -> nn.Module:
        """The student without DDP wrappers (MMSeparateDDP wraps it separately).

        Every layer is stripped: re-wrapping after pruning may nest them.
        """
        return strip_model_wrappers(self.student)

    def state_dict(self, *args, destination=None, prefix: str = '', keep_vars: bool = False):
        """The state without DDP wrapper prefixes (``student.model.*``, never
        ``student.module.model.*``).

        ``MMSeparateDistributedDataParallel`` wraps ``student`` in place, and the Runner
        saves ``model.state_dict()`` as is, while mmengine's loader strips wrappers
        before matching keys: without this, a distributed run's checkpoint silently
        fails to load on resume (a warning only), and single/multi-process checkpoints
        would not be interchangeable.
        """
        if args:  # torch's deprecated positional form (destination, prefix, keep_vars)
            return super().state_dict(*args, destination=destination, prefix=prefix,
                                      keep_vars=keep_vars)
        return get_state_dict(self, destination=destination, prefix=prefix,
                              keep_vars=keep_vars)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        """Refuses a state dict whose tensor shapes do not fit, on every load path.

        MMEngine's Runner (``load_from``, ``--resume``, ``tools/test.py``, MMagic's
        tools too) loads with ``strict=False``, which only warns about a mismatched
        shape and keeps the initial weights: a pruned checkpoint loaded without
        ``DiffusionPruningHook`` would be finetuned or scored with the dense
        initialisation. Torch's and MMEngine's loaders both call this on the model
        with the whole state dict before any submodule loads; the hook rebuilds the
        pruned shapes earlier (``after_load_checkpoint``), so its loads pass.
        """
        expected = {key: list(value.shape)
                    for key, value in get_state_dict(self, keep_vars=True).items()}
        check_shapes(expected, state_dict, prefix=prefix, what='The checkpoint')
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def train(self, mode: bool = True) -> 'DiffusionDistiller':
        """Sets train mode on the student only; frozen networks stay in eval."""
        super().train(mode)
        for module in (self.teacher, self.vae, self.text_encoder, self.class_embedder):
            if module is not None:
                module.eval()
        return self

    # ------------------------------------------------------------------ training
    def train_step(self, data: dict,
                   optim_wrapper: Union[OptimWrapperDict, OptimWrapper]) -> Dict[str, Tensor]:
        """One optimisation step of the student (DSM + KD + Jacobian matching).

        Args:
            data (dict): A dataloader batch (images in ``inputs``; labels in
                ``data_samples.gt_label``, prompts in ``data_samples.prompt``).
            optim_wrapper (OptimWrapperDict | OptimWrapper): With a key
                ``'student'``, or a single wrapper over the student's parameters.

        Returns:
            dict: Log variables (``loss``, ``loss_dsm``, ``loss_kd``, ``loss_jacobian``,
            ``nonfinite_skip``: 1 when the step guard skipped this update, else 0).
        """
        student_wrapper = self._student_optim_wrapper(optim_wrapper)
        data = self.data_preprocessor(data, True)
        with student_wrapper.optim_context(self.student):
            losses = self.compute_losses(data['inputs'], data.get('data_samples'))
            parsed_loss, log_vars = self.parse_losses(losses)
        # update_params' steps, with the student's gradients averaged over the ranks
        # between backward and step (see the class note on distributed training).
        student_wrapper.backward(student_wrapper.scale_loss(parsed_loss))
        update = student_wrapper.should_update()
        if update:
            self._sync_student_grads()
        nonfinite = self._nonfinite_terms(losses, student_wrapper, update)
        self._window_nonfinite += [n for n in nonfinite if n not in self._window_nonfinite]
        skip = bool(self._window_nonfinite) and update
        if update:
            if not skip:
                student_wrapper.step()
            student_wrapper.zero_grad()
        if nonfinite or skip:
            self._num_train_steps += 1  # counted, but the EMA keeps its weights
        else:
            self._update_ema()
        if update:
            self._count_skip(skip)
        log_vars['nonfinite_skip'] = torch.tensor(float(skip))
        return log_vars

    def _nonfinite_terms(self, losses: Dict[str, Tensor], wrapper: OptimWrapper,
                         check_grads: bool) -> List[str]:
        """Names of the non-finite loss terms (and ``'gradient'``), the same on every rank.

        One flag per term is all-reduced (max), so that every rank skips together: a
        rank that skipped alone would leave the others' weights and EMA apart from it.
        Gradients are checked after their all-reduce; under a loss scaler
        (``AmpOptimWrapper``) they are not, its ``GradScaler`` skips inf steps itself.

        Args:
            losses (dict): This step's loss terms (``loss_dsm``, ...), scalars.
            wrapper (OptimWrapper): The student's optimizer wrapper.
            check_grads (bool): Whether the student's gradients are complete (an
                accumulation boundary) and are to be checked.

        Returns:
            list[str]: Non-finite loss names, then ``'gradient'`` if a gradient is.
        """
        names = list(losses) + ['gradient']
        device = next(iter(losses.values())).device
        flags = [~torch.isfinite(value.detach()).all() for value in losses.values()]
        grads = [p.grad for p in self._bare_student().parameters() if p.grad is not None]
        if check_grads and grads and getattr(wrapper, 'loss_scaler', None) is None:
            flags.append(~torch.stack([torch.isfinite(g).all() for g in grads]).all())
        else:
            flags.append(torch.zeros((), dtype=torch.bool, device=device))
        flags = torch.stack([f.to(device) for f in flags]).float()
        if get_world_size() > 1:
            all_reduce(flags, op='max')
        return [name for name, flag in zip(names, flags.tolist()) if flag > 0]

    def _count_skip(self, skipped: bool) -> None:
        """Counts an update the step guard skipped and stops a diverged run.

        Raises:
            FloatingPointError: After ``max_consecutive_skips`` skipped updates in a row.
        """
        terms, self._window_nonfinite = self._window_nonfinite, []
        if not skipped:
            self._consecutive_skips = 0
            return
        self.num_skipped_steps += 1
        self._consecutive_skips += 1
        culprit = getattr(self.jacobian_loss, 'last_nonfinite', None)
        detail = f' (2ndMatchLoss: {culprit})' if culprit and 'loss_jacobian' in terms else ''
        if self._consecutive_skips >= self.max_consecutive_skips:
            raise FloatingPointError(
                f'Non-finite {", ".join(terms)}{detail} in {self._consecutive_skips} '
                'training step(s) in a row, each skipped: the run has diverged. '
                'Lower the learning rate, clip gradients (optim_wrapper clip_grad), use '
                "jacobian_scale='sigma' or smaller loss weights, or resume from an earlier "
                'checkpoint; max_consecutive_skips sets how many are tolerated.')
        print_log(f'Skipped the update: non-finite {", ".join(terms)}{detail} '
                  f'({self._consecutive_skips} in a row, {self.num_skipped_steps} in all; '
                  f'the run stops at {self.max_consecutive_skips} in a row).', 'current',
                  logging.WARNING)

    def _sync_student_grads(self) -> None:
        """Averages the student's gradients over all ranks (no-op in one process).

        Parameters without a gradient on this rank contribute zeros, so that every
        rank reduces the same tensor list and ends with the same gradients.
        """
        if get_world_size() == 1:
            return
        params = [p for p in self._bare_student().parameters() if p.requires_grad]
        for param in params:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        all_reduce_params([p.grad for p in params], op='mean')

    def _student_optim_wrapper(self, optim_wrapper) -> OptimWrapper:
        """Picks the student's wrapper and checks that it holds student parameters only."""
        if isinstance(optim_wrapper, OptimWrapperDict):
            if 'student' not in optim_wrapper:
                raise KeyError('optim_wrapper has no key "student" (keys: '
                               f'{list(optim_wrapper.keys())}); configure '
                               "dict(constructor='MultiOptimWrapperConstructor', "
                               'student=dict(optimizer=...)).')
            optim_wrapper = optim_wrapper['student']
        if self._checked_optimizer is not optim_wrapper.optimizer:
            student_ids = {id(p) for p in self.student.parameters()}
            foreign = [p for group in optim_wrapper.optimizer.param_groups
                       for p in group['params'] if id(p) not in student_ids]
            if foreign:
                raise ValueError(
                    f'The optimizer holds {len(foreign)} parameter tensors that are not the '
                    "student's (e.g. the teacher's); build it over the student only: "
                    "dict(constructor='MultiOptimWrapperConstructor', student=dict(...)) or "
                    "modules='student'.")
            self._checked_optimizer = optim_wrapper.optimizer
        return optim_wrapper

    def _update_ema(self) -> None:
        """Updates the student EMA after an optimizer step (copies before ``ema_start``)."""
        self._num_train_steps += 1
        ema = getattr(self, 'student_ema', None)
        if not isinstance(ema, BaseAveragedModel):
            return
        curr_iter = MessageHub.get_current_instance().get_info('iter')
        step = self._num_train_steps if curr_iter is None else curr_iter + 1
        student = self._bare_student()
        if step >= self.ema_start:
            ema.update_parameters(student)
            if not ema.update_buffers:
                ema.sync_buffers(student)
        else:
            ema.sync_parameters(student)

    def forward(self,
                inputs: Union[Tensor, dict],
                data_samples: Optional[DataSample] = None,
                mode: Optional[str] = None):
        """``mode='loss'``: the loss dict (plain DDP); otherwise generated samples.

        Args:
            inputs (Tensor | dict): Preprocessed images for ``'loss'``; sampling
                arguments (``num_batches``, ``noise``, ``sample_model``,
                ``sample_kwargs``) otherwise.
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
        """The enabled, weighted losses for one preprocessed batch.

        Args:
            inputs (Tensor | dict): Images (B, 3, H, W) in the preprocessor's range,
                or a dict holding them under ``'img'``.
            data_samples (DataSample, optional): Stacked samples with labels/prompts.

        Returns:
            dict: ``loss_dsm`` / ``loss_kd`` / ``loss_jacobian`` as enabled.
        """
        x_0 = self._encode_images(self._images(inputs, data_samples))
        batch = x_0.shape[0]
        directions = drop_u = None
        if self.per_sample_noise_seed is None:
            timesteps = self._sample_timesteps(batch, x_0.device)
            noise = torch.randn_like(x_0)
        else:
            timesteps, noise, directions, drop_u = self._per_sample_draws(x_0, data_samples)
        condition = self._training_condition(data_samples, batch, x_0.device, drop_u=drop_u)
        x_t = self.noise_scheduler.add_noise(x_0, noise, timesteps)

        # The bare student: its DDP wrapper's reducer must not see the Jacobian
        # passes; train_step averages the gradients itself.
        student = self._bare_student()

        def student_fn(x: Tensor, batch_index: Optional[Tensor] = None) -> Tensor:
            t, c = _select(timesteps, condition, batch_index)
            return run_denoiser(student, x, t, c)

        def teacher_fn(x: Tensor, batch_index: Optional[Tensor] = None) -> Tensor:
            t, c = _select(timesteps, condition, batch_index)
            return run_denoiser(self.teacher, x, t, c)

        losses = {}
        if self.jacobian_loss is not None:
            scale = self._sigmas(timesteps) if self.jacobian_scale == 'sigma' else None
            extra = {} if directions is None else dict(directions=directions)
            jac = self.jacobian_loss(student_fn, teacher_fn, x_t, scale=scale,
                                     weight=self._jacobian_weights(timesteps),
                                     return_outputs=True, **extra)
            student_out, teacher_out = jac.student_out, jac.teacher_out
            losses['loss_jacobian'] = jac.loss
        else:
            student_out = student_fn(x_t)
            teacher_out = None
            if 'kd' in self.loss_weights:
                with torch.no_grad():
                    teacher_out = teacher_fn(x_t)
        _check_output_shape(student_out, x_t, 'student')
        if teacher_out is not None:
            _check_output_shape(teacher_out, x_t, 'teacher')
        if 'dsm' in self.loss_weights:
            target = self._dsm_target(x_0, noise, timesteps)
            losses['loss_dsm'] = self.loss_weights['dsm'] * self._mse(student_out, target)
        if 'kd' in self.loss_weights:
            losses['loss_kd'] = self.loss_weights['kd'] * self._mse(
                student_out, teacher_out.detach())
        return losses

    def pruning_loss(self, data_batch: dict, timesteps: Tensor) -> Tensor:
        """Student DSM loss on a raw dataloader batch at given timesteps (for pruning).

        Args:
            data_batch (dict): A batch as the dataloader yields it.
            timesteps (Tensor): Per-sample timesteps (B,) (or one, broadcast).

        Returns:
            Tensor: Scalar DSM loss (``pixel_reduction`` applies), differentiable
            w.r.t. the student's parameters.
        """
        data = self.data_preprocessor(data_batch, True)
        x_0 = self._encode_images(self._images(data['inputs'], data.get('data_samples')))
        batch = x_0.shape[0]
        condition = self._training_condition(data.get('data_samples'), batch, x_0.device,
                                             drop=False)
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
        _check_output_shape(prediction, x_t, 'student')
        return self._mse(prediction, self._dsm_target(x_0, noise, timesteps))

    def _images(self, inputs: Union[Tensor, dict], data_samples=None) -> Tensor:
        """The image batch (B, 3, H, W) from preprocessed inputs.

        Looked up in ``inputs`` (``'img'``, ``'gt'``, ``'gt_img'``), else in the data
        samples' ``gt_img``: MMagic's ``PackInputs()`` with its default keys (as in
        MMagic's ``unconditional_imgs_*`` dataset files) leaves a ``gt`` image there, and
        the data preprocessor normalises it like an input.
        """
        if isinstance(inputs, dict):
            for key in ('img', 'gt', 'gt_img'):
                if key in inputs:
                    return inputs[key]
            images = _field(data_samples, 'gt_img')
            if isinstance(images, (list, tuple)):
                images = torch.stack(list(images))
            if torch.is_tensor(images):
                return images
            raise KeyError(f'No image in inputs (keys {sorted(inputs)}) or in the data '
                           "samples' gt_img; pack the image as one of 'img', 'gt', "
                           "'gt_img' (MMagic's PackInputs(), which keeps the image's "
                           'channel order with it).')
        if isinstance(inputs, (list, tuple)):
            return torch.stack(list(inputs))
        return inputs

    @torch.no_grad()
    def _encode_images(self, images: Tensor) -> Tensor:
        """Images -> diffusion space: scaled VAE latents, or the pixels themselves."""
        if self.vae is None:
            return images
        vae = unwrap_denoiser(self.vae)
        encoded = vae.encode(images)
        if hasattr(encoded, 'latent_dist'):  # AutoencoderKL
            latents = encoded.latent_dist.sample()
        elif hasattr(encoded, 'latents'):
            # VQModel: the pre-quantisation latents, as LDM trains on (decode quantises).
            latents = encoded.latents
        else:
            raise TypeError(f'{type(vae).__name__}.encode returned {type(encoded).__name__}; '
                            'expected latent_dist (AutoencoderKL) or latents (VQModel).')
        return latents * vae.config.scaling_factor

    def _sample_timesteps(self, batch: int, device) -> Tensor:
        """Uniform timesteps (B,), antithetic pairs (t, T-1-t) when configured."""
        num_t = int(self.noise_scheduler.config.num_train_timesteps)
        if not self.antithetic_timesteps:
            return torch.randint(0, num_t, (batch,), device=device)
        half = torch.randint(0, num_t, ((batch + 1) // 2,), device=device)
        return torch.cat([half, num_t - 1 - half])[:batch]

    def _per_sample_draws(self, x_0: Tensor, data_samples) -> Tuple[
            Tensor, Tensor, Optional[Tensor], Tensor]:
        """Timesteps (B,), noise (B, ...), directions (K, B, ...) and dropout uniforms (B,)
        drawn per sample from ``(per_sample_noise_seed, iteration, sample_idx)``."""
        sample_idx = _field(data_samples, 'sample_idx')
        if sample_idx is None:
            raise ValueError('per_sample_noise_seed needs `sample_idx` in the metainfo of '
                             'every data sample (mmengine BaseDataset sets it; keep it in '
                             'PackInputs), or set per_sample_noise_seed=None.')
        sample_idx = [int(i) for i in (sample_idx if isinstance(sample_idx, (list, tuple))
                                       else torch.as_tensor(sample_idx).reshape(-1))]
        if len(sample_idx) != x_0.shape[0]:
            raise ValueError(f'Got {len(sample_idx)} sample_idx for a batch of {x_0.shape[0]}.')
        curr_iter = MessageHub.get_current_instance().get_info('iter')
        step = self._num_train_steps if curr_iter is None else int(curr_iter)
        num_t = int(self.noise_scheduler.config.num_train_timesteps)
        num_proj = getattr(self.jacobian_loss, 'num_projections', None)
        timesteps, noises, directions, drop_u = [], [], [], []
        for idx in sample_idx:
            gen = torch.Generator().manual_seed(_mix_seed(self.per_sample_noise_seed, step, idx))
            if self.antithetic_timesteps:
                # Pair items 2k and 2k+1: same draw, mirrored for the odd one.
                pair = torch.Generator().manual_seed(
                    _mix_seed(self.per_sample_noise_seed, step, idx // 2, salt=1))
                t = int(torch.randint(0, num_t, (1, ), generator=pair))
                timesteps.append(num_t - 1 - t if idx % 2 else t)
            else:
                timesteps.append(int(torch.randint(0, num_t, (1, ), generator=gen)))
            drop_u.append(torch.rand((), generator=gen))
            noises.append(torch.randn(x_0.shape[1:], generator=gen))
            if num_proj is not None:  # float32 on the generator's device, like the noise
                directions.append(
                    unit_directions((num_proj, *x_0.shape[1:]), noises[-1], gen))
        device = x_0.device
        timesteps = torch.tensor(timesteps, device=device, dtype=torch.long)
        noise = torch.stack(noises).to(device=device, dtype=x_0.dtype)
        directions = torch.stack(directions, dim=1).to(device) if directions else None
        return timesteps, noise, directions, torch.stack(drop_u)

    def _jacobian_weights(self, timesteps: Tensor) -> Optional[Tensor]:
        """Per-sample Jacobian weights (B,) from the t range and warm-up, or None."""
        if self.jacobian_t_range is None and self.jacobian_warmup_iters == 0:
            return None
        weight = torch.ones(timesteps.shape[0], device=timesteps.device)
        if self.jacobian_t_range is not None:
            t_min, t_max = self.jacobian_t_range
            weight = weight * ((timesteps >= t_min) & (timesteps <= t_max)).float()
        if self.jacobian_warmup_iters > 0:
            curr_iter = MessageHub.get_current_instance().get_info('iter')
            step = self._num_train_steps if curr_iter is None else int(curr_iter)
            weight = weight * min(1.0, step / self.jacobian_warmup_iters)
        return weight

    def _sigmas(self, timesteps: Tensor) -> Tensor:
        """sigma_t = sqrt(1 - alpha_bar_t) per sample, (B,)."""
        alphas_cumprod = self.noise_scheduler.alphas_cumprod.to(timesteps.device)
        return (1.0 - alphas_cumprod[timesteps]).sqrt().float()

    def _dsm_target(self, x_0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """The regression target of the training scheduler's parametrisation."""
        prediction_type = self.noise_scheduler.config.prediction_type
        if prediction_type == 'epsilon':
            return noise
        if prediction_type == 'v_prediction':
            return self.noise_scheduler.get_velocity(x_0, noise, timesteps)
        if prediction_type == 'sample':
            return x_0
        raise ValueError(f'Unknown prediction_type {prediction_type!r} of the noise '
                         "scheduler; use 'epsilon', 'v_prediction' or 'sample'.")

    def _mse(self, prediction: Tensor, target: Tensor) -> Tensor:
        """Squared error: pixel-summed and batch-averaged, or fully averaged."""
        sq_err = (prediction.float() - target.float()).pow(2)
        if self.pixel_reduction == 'mean':
            return sq_err.mean()
        return sq_err.flatten(1).sum(1).mean()

    # -------------------------------------------------------------- conditioning
    def _training_condition(self, data_samples, batch: int, device, drop: bool = True,
                            drop_u: Optional[Tensor] = None) -> Optional[Tensor]:
        """Labels (B,) or text states (B, L, D), with CFG dropout shared by both nets.

        ``drop_u`` (B,): given uniforms for the dropout decisions (per-sample seeding).
        """
        drop_prob = self.label_drop_prob if drop else 0.0
        if self.text_encoder is not None:
            prompts = _field(data_samples, 'prompt')
            if prompts is None:
                raise ValueError('A text-conditioned distiller needs `prompt` in the data '
                                 'samples of each batch.')
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            if drop_prob > 0:
                keep = (torch.rand(len(prompts)) if drop_u is None else drop_u.cpu()) \
                    >= drop_prob
                prompts = [p if k else '' for p, k in zip(prompts, keep.tolist())]
            return self.encode_prompts(prompts, device)
        if self.num_classes is None:
            return None
        labels = _labels(data_samples, batch, device)
        if labels is None:
            raise ValueError('A class-conditioned distiller needs `gt_label` in the data '
                             'samples of each batch.')
        if drop_prob > 0:
            dropped = (torch.rand(batch, device=device) if drop_u is None
                       else drop_u.to(device)) < drop_prob
            labels = torch.where(dropped, torch.full_like(labels, self.num_classes), labels)
        return self._embed_labels(labels)

    def _embed_labels(self, labels: Tensor) -> Tensor:
        """Labels as the denoiser takes them: context (B, 1, D) through the class
        embedder, or the labels themselves."""
        if self.class_embedder is None:
            return labels
        with torch.no_grad():
            return self.class_embedder(labels)

    @torch.no_grad()
    def encode_prompts(self, prompts: List[str], device) -> Tensor:
        """Frozen text encoder states (B, L, D) of the prompts."""
        tokens = self.tokenizer(prompts, padding='max_length', truncation=True,
                                max_length=self.tokenizer.model_max_length,
                                return_tensors='pt')
        return self.text_encoder(tokens.input_ids.to(device))[0]

    # ------------------------------------------------------------------ sampling
    def noise_fn(self, noise: Optional[Tensor] = None, num_batches: int = 1) -> Tensor:
        """Initial sampling noise (B, C, H, W); a given tensor is returned as is.

        Used by MMagic's ``VisualizationHook`` (``NoiseSampler``) for fixed inputs.
        """
        if noise is not None:
            return noise.to(self.data_preprocessor.device)
        return torch.randn(num_batches, *self._sample_shape(),
                           device=self.data_preprocessor.device)

    def _sample_shape(self) -> Tuple[int, ...]:
        """(C, H, W) of the denoiser input."""
        if self.sample_shape is None:
            x_t = example_denoiser_inputs(self._reference_net(), batch_size=1)['x_t']
            self.sample_shape = tuple(x_t.shape[1:])
        return self.sample_shape

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
            torch.manual_seed(_mix_seed(torch.initial_seed(), self._sampling_calls,
                                        get_dist_info()[0]))
            self._sampling_calls += 1
            data = self.data_preprocessor(data)
            return self.generate(data['inputs'], data.get('data_samples'))

    def test_step(self, data: dict) -> List[DataSample]:
        """Same as :meth:`val_step`."""
        return self.val_step(data)

    @torch.no_grad()
    def generate(self, inputs: Union[Tensor, dict],
                 data_samples: Optional[DataSample] = None) -> List[DataSample]:
        """Samples a batch with the test scheduler.

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
        if isinstance(inputs, Tensor):
            inputs = dict(noise=inputs)
        sample_kwargs = dict(inputs.get('sample_kwargs') or {})
        noise = inputs.get('noise')
        num_batches = noise.shape[0] if noise is not None else get_valid_num_batches(
            inputs, data_samples)
        noise = self.noise_fn(noise, num_batches)
        sample_model, net = self._sampling_net(inputs.get('sample_model'))
        condition, uncondition, prompts = self._sampling_condition(
            data_samples, sample_kwargs, num_batches, noise.device)
        steps = int(sample_kwargs.get('num_inference_steps', self.num_inference_steps))
        scale = float(sample_kwargs.get('guidance_scale', self.guidance_scale))

        images = self.sample(net, noise, condition, uncondition, steps, scale)
        # No `noise` field: VisualizationHook grids every 3-D tensor field, and latent
        # noise (4 channels) cannot be tiled with RGB images.
        out = DataSample(fake_img=self.data_preprocessor.destruct(images, data_samples),
                         sample_model=sample_model)
        if sample_kwargs.get('with_teacher'):
            if self.teacher is None:
                raise ValueError('sample_kwargs["with_teacher"] needs a teacher, but this '
                                 'distiller has teacher=None.')
            teacher_images = self.sample(self.teacher, noise, condition, uncondition,
                                         steps, scale)
            out.teacher_img = self.data_preprocessor.destruct(teacher_images, data_samples)
        if isinstance(data_samples, DataSample):
            out.update(data_samples)
        if prompts is not None:  # what was sampled from (CLIPScore pairs it with fake_img)
            out.prompt = prompts
        return out.split(allow_nonseq_value=True)

    def _sampling_net(self, sample_model: Optional[str]) -> Tuple[str, nn.Module]:
        """Resolves 'orig' / 'ema' / 'teacher' (None: ``sample_with_ema``)."""
        ema = getattr(self, 'student_ema', None)
        if sample_model is None:
            sample_model = 'ema' if (self.sample_with_ema and ema is not None) else 'orig'
        if sample_model not in SAMPLE_MODELS:
            raise ValueError(f'sample_model must be one of {SAMPLE_MODELS}, '
                             f'got {sample_model!r}.')
        if sample_model == 'teacher':
            if self.teacher is None:
                raise ValueError("sample_model='teacher' needs a teacher, but this "
                                 "distiller has teacher=None; sample 'orig' or 'ema'.")
            return sample_model, self.teacher
        if sample_model == 'ema' and ema is not None:
            return sample_model, ema.module if isinstance(ema, BaseAveragedModel) else ema
        # MMagic metrics ask for 'ema' by default; without an EMA the student is it.
        return 'orig', self.student

    def _sampling_condition(self, data_samples, sample_kwargs: dict, batch: int, device
                            ) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[List[str]]]:
        """Condition, null condition (None for unconditional) and the prompts (B) used."""
        if self.text_encoder is not None:
            prompts = sample_kwargs.get('prompt') or _field(data_samples, 'prompt')
            if prompts is None:
                if not self.sample_prompts:
                    raise ValueError('Text-conditioned sampling needs prompts: set '
                                     '`sample_prompts` or pass sample_kwargs["prompt"].')
                # Cycle through all prompts across calls (e.g. 30k COCO captions for FID),
                # not only the first `batch` of them; ranks take interleaved blocks, so
                # W ranks together cover what one process would.
                rank, world_size = get_dist_info()
                start = self._next_prompt + rank * batch
                prompts = [self.sample_prompts[(start + i) % len(self.sample_prompts)]
                           for i in range(batch)]
                self._next_prompt = ((self._next_prompt + world_size * batch) %
                                     len(self.sample_prompts))
            prompts = [prompts] * batch if isinstance(prompts, str) else list(prompts)
            return (self.encode_prompts(prompts, device),
                    self.encode_prompts([''] * batch, device), prompts)
        if self.num_classes is None:
            return None, None, None
        labels = sample_kwargs.get('labels')
        if labels is not None:
            labels = torch.as_tensor(labels, device=device).long().reshape(-1)
        else:
            labels = _labels(data_samples, batch, device)
        if labels is None:
            labels = torch.randint(0, self.num_classes, (batch,), device=device)
        return (self._embed_labels(labels),
                self._embed_labels(torch.full_like(labels, self.num_classes)), None)

    @torch.no_grad()
    def sample(self, net: nn.Module, noise: Tensor, condition: Optional[Tensor] = None,
               uncondition: Optional[Tensor] = None, num_inference_steps: Optional[int] = None,
               guidance_scale: float = 1.0) -> Tensor:
        """Runs the test scheduler from ``noise`` and decodes latents.

        Args:
            net (nn.Module): Denoiser (student, its EMA or the teacher).
            noise (Tensor): Initial noise (B, C, H, W).
            condition (Tensor, optional): Labels (B,) or text states (B, L, D).
            uncondition (Tensor, optional): Null condition for guidance.
            num_inference_steps (int, optional): Defaults to ``num_inference_steps``.
            guidance_scale (float): Classifier-free guidance scale (1: off).

        Returns:
            Tensor: Images (B, 3, H, W) in the data preprocessor's normalised range.
        """
        scheduler = self.test_scheduler
        scheduler.set_timesteps(num_inference_steps or self.num_inference_steps)
        x_t = noise * scheduler.init_noise_sigma
        guided = guidance_scale != 1.0 and uncondition is not None
        for t in scheduler.timesteps:
            x_in = scheduler.scale_model_input(x_t, t)
            t_batch = t.to(noise.device).expand(x_t.shape[0])
            if guided:
                pred_c, pred_u = run_denoiser(
                    net, torch.cat([x_in, x_in]), torch.cat([t_batch, t_batch]),
                    torch.cat([condition, uncondition])).chunk(2)
                prediction = pred_u + guidance_scale * (pred_c - pred_u)
            else:
                prediction = run_denoiser(net, x_in, t_batch, condition)
            x_t = scheduler.step(prediction, t, x_t).prev_sample
        if self.vae is None:
            return x_t
        vae = unwrap_denoiser(self.vae)
        return vae.decode(x_t / vae.config.scaling_factor).sample


# ---------------------------------------------------------------------- helpers
def _select(timesteps: Tensor, condition: Optional[Tensor],
            batch_index: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
    """Per-sample timesteps/condition for the rows ``batch_index`` of the batch."""
    if batch_index is None:
        return timesteps, condition
    return timesteps[batch_index], None if condition is None else condition[batch_index]


def _mix_seed(seed: int, step: int, index: int, salt: int = 0) -> int:
    """A 63-bit generator seed from (seed, step, index, salt), well spread (SplitMix64)."""
    value = 0
    for part in (seed, step, index, salt):
        value = (value ^ (int(part) + 0x9E3779B97F4A7C15 + (value << 6) + (value >> 2))) \
            & 0xFFFFFFFFFFFFFFFF
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


def _check_t_range(t_range: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """Validates ``jacobian_t_range`` as (t_min, t_max) with 0 <= t_min <= t_max."""
    if t_range is None:
        return None
    if len(t_range) != 2 or not 0 <= int(t_range[0]) <= int(t_range[1]):
        raise ValueError('jacobian_t_range must be (t_min, t_max) with 0 <= t_min <= t_max, '
                         f'got {t_range!r}.')
    return int(t_range[0]), int(t_range[1])


def _check_output_shape(output: Tensor, x_t: Tensor, role: str) -> None:
    """Raises when a denoiser's output cannot be compared with its input/the other net."""
    if output.shape != x_t.shape:
        raise ValueError(
            f'The {role} output has shape {tuple(output.shape)} but the noisy input has '
            f'{tuple(x_t.shape)}; teacher and student must both predict a tensor of the '
            'input shape (same in/out channels and sample size).')


def _field(data_samples, key: str):
    """A field of the (stacked) data samples, or None."""
    if data_samples is None:
        return None
    if isinstance(data_samples, (list, tuple)):
        values = [getattr(s, key, None) for s in data_samples]
        return None if any(v is None for v in values) else values
    return getattr(data_samples, key, None)


def _labels(data_samples, batch: int, device) -> Optional[Tensor]:
    """Class labels (B,) long from ``gt_label`` of the data samples, or None."""
    value = _field(data_samples, 'gt_label')
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = [getattr(v, 'label', v) for v in value]
        value = torch.stack([torch.as_tensor(v).reshape(-1)[0] for v in value])
    value = getattr(value, 'label', value)
    labels = torch.as_tensor(value, device=device).long().reshape(-1)
    if labels.numel() != batch:
        raise ValueError(f'Got {labels.numel()} labels for a batch of {batch}.')
    return labels


def _ddim_like(scheduler) -> dict:
    """A DDIM scheduler config with the training scheduler's noise schedule."""
    from diffusers import DDIMScheduler
    accepted = inspect.signature(DDIMScheduler.__init__).parameters
    cfg = {k: v for k, v in dict(scheduler.config).items() if k in accepted}
    return dict(type='DDIMScheduler', **cfg)


def _mark_initialised(module: nn.Module) -> None:
    """Keeps ``init_weights`` from re-initialising loaded weights."""
    for sub in module.modules():
        if isinstance(sub, BaseModule):
            sub._is_init = True


def _load_weights(module: nn.Module, ckpt: Union[str, dict], role: str) -> None:
    """Loads an MMEngine checkpoint into the bare denoiser, strictly.

    Args:
        module (nn.Module): The (possibly wrapped) denoiser.
        ckpt (str | dict): Path, or ``dict(filename=..., prefix=...)``.
        role (str): Name of the config key, for error messages.
    """
    if isinstance(ckpt, dict):
        unknown = set(ckpt) - {'filename', 'prefix'}
        if 'filename' not in ckpt or unknown:
            raise ValueError(f'{role} as a dict takes keys filename (required) and prefix; '
                             f'got {sorted(ckpt)}.')
        filename, prefix = ckpt['filename'], ckpt.get('prefix')
    elif isinstance(ckpt, str):
        filename, prefix = ckpt, None
    else:
        raise TypeError(f'{role} must be a path or dict(filename=..., prefix=...), '
                        f'got {type(ckpt).__name__}.')
    if '://' not in filename and not osp.isfile(osp.expanduser(filename)):
        raise FileNotFoundError(f'{role} {filename!r} does not exist; give the path of an '
                                'MMEngine checkpoint (or use from_pretrained for a '
                                'diffusers folder).')
    net = unwrap_denoiser(module)
    if prefix:
        state_dict = _load_checkpoint_with_prefix(prefix, filename, map_location='cpu')
    else:
        checkpoint = _load_checkpoint(filename, map_location='cpu')
        state_dict = checkpoint.get('state_dict', checkpoint)
        state_dict = {re.sub(r'^module\.', '', key): value for key, value in state_dict.items()}
    try:
        check_state_dict_shapes(net, state_dict, what=f'{role} {filename!r}')
    except ValueError as error:
        raise ValueError(f'{error}. {role} loads into the network as configured; a pruned '
                         "run's weights load with load_from=<checkpoint> and "
                         'DiffusionPruningHook instead.') from None
    load_state_dict(net, state_dict, strict=True)
