"""DiffusionPruningHook: prunes the student before training and rebuilds it on load."""
import json
import os.path as osp
from typing import Dict, Optional, Sequence

import torch
from mmengine.dist import broadcast_object_list, get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import find_latest_checkpoint
from torch import nn
from torch.utils.data import DataLoader

from mmagic.registry import HOOKS
from mmdiff_2ndm.models.averaged_model import retarget_average
from mmdiff_2ndm.models.denoisers import strip_model_wrappers, unwrap_denoiser
from mmdiff_2ndm.pruning import (GRADIENT_IMPORTANCES, IMPORTANCES, check_record,
                                 check_state_dict_shapes, prune_denoiser, rebuild_pruned)

SUMMARY_FILE = 'pruning_summary.json'


@HOOKS.register_module()
class DiffusionPruningHook(Hook):
    """Structurally prunes ``model.<student_key>`` at the start of a run.

    Fresh run: in ``before_run`` rank 0 computes the pruning (importance, indices),
    broadcasts the plain-data record and every other rank replays it, so all ranks hold
    the same architecture and weights. Then everything that already holds the dense
    parameters is rebuilt: optimizer param groups (their state is dropped), the DDP
    wrapper, ``model.<ema_key>`` (an mmengine ``BaseAveragedModel``, e.g. mmagic's
    ``ExponentialMovingAverage`` or ``WarmupExponentialMovingAverage``: its ``module``
    becomes a copy of the pruned student, momentum/interval/steps kept; the same
    ``retarget_average`` the distiller uses) and mmengine ``EMAHook`` copies.

    Resume, ``load_from`` and ``tools/test.py``: pruning is deferred to
    ``after_load_checkpoint``, which mmengine calls before the state dict (and, on
    resume, the optimizer state) is loaded: the student is rebuilt from the record in
    ``checkpoint['meta']['pruning']`` without computing importance.

    Note:
        Checkpoints hold the record at ``checkpoint['meta']['pruning']`` (plain data,
        loads with ``torch.load(weights_only=True)``). A checkpoint whose student shapes
        do not fit the (rebuilt) student raises ``ValueError`` instead of mmengine's
        shape-mismatch warning. A dense checkpoint (no record) loaded through
        ``load_from`` while this hook is configured also raises: initialise the student
        from dense weights in the model config, or prune once with ``tools/prune.py``.
        The before/after table is logged and written to ``<work_dir>/pruning_summary.json``.

    Args:
        ratio (float): Channel pruning ratio (see ``mmdiff_2ndm.pruning``). Defaults to 0.3.
        importance (str): ``'magnitude'``, ``'taylor'``, ``'diff-pruning'`` or
            ``'random'``. Gradient criteria call ``model.pruning_loss(data_batch,
            timesteps)`` on one training batch. Defaults to ``'diff-pruning'``.
        student_key (str): Attribute of the model holding the student (bare diffusers
            model, DenoisingUnet or mmagic ``DiffusersWrapper``). Defaults to ``'student'``.
        ema_key (str): Attribute holding the student's EMA copy, if any. Defaults to
            ``'student_ema'``.
        prune_cfg (dict, optional): Further ``prune_denoiser`` keywords
            (``groupnorm_ratio``, ``ignored_layers``, ``round_to``, ``prune_num_heads``,
            ``head_ratio``, ``timesteps``, ``diff_pruning_thr``, ``target``, ``seed``).
            Defaults to None.
    """

    # Before anything that copies or wraps parameters (EMAHook is NORMAL).
    priority = 'HIGHEST'

    def __init__(self,
                 ratio: float = 0.3,
                 importance: str = 'diff-pruning',
                 student_key: str = 'student',
                 ema_key: str = 'student_ema',
                 prune_cfg: Optional[dict] = None):
        if importance not in IMPORTANCES:
            raise ValueError(f'importance={importance!r}; choose one of {IMPORTANCES}.')
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f'ratio={ratio} must lie in [0, 1).')
        prune_cfg = dict(prune_cfg or {})
        for key in ('loss_fn', 'ratio', 'importance'):
            if key in prune_cfg:
                raise ValueError(f'prune_cfg must not set {key!r}; it is an argument of the '
                                 'hook (or, for loss_fn, comes from model.pruning_loss).')
        self.ratio = ratio
        self.importance = importance
        self.student_key = student_key
        self.ema_key = ema_key
        self.prune_cfg = prune_cfg
        self.record: Optional[dict] = None
        self._deferred = False

    # ----------------------------------------------------------------- hook points
    def before_run(self, runner) -> None:
        """Prunes the student, unless a checkpoint will define the pruned shapes."""
        if self.record is not None:
            return
        if self._checkpoint_will_load(runner):
            self._deferred = True
            return
        self.prune(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Rebuilds the pruned student from the checkpoint's record, checks the shapes."""
        model = self._model(runner)
        record = checkpoint.get('meta', {}).get('pruning')
        if record is not None:
            check_record(record)
            old_params = _named_param_ids(model)
            self._apply_record(runner, record, old_params)
            self._deferred = False
        state_dict = checkpoint.get('state_dict', checkpoint)
        student = self._student_net(model)
        check_state_dict_shapes(student, state_dict, prefix=_prefix_of(model, student),
                                what='checkpoint student')
        ema = self._ema_net(model)
        if ema is not None:
            check_state_dict_shapes(ema, state_dict, prefix=_prefix_of(model, ema),
                                    what='checkpoint student EMA')
        if record is None and self._deferred:
            raise ValueError(
                'The checkpoint holds no pruning record (checkpoint["meta"]["pruning"]) and '
                'its student is dense, but DiffusionPruningHook is configured to prune. '
                'Initialise the student from dense weights in the model config (the hook '
                'prunes it), or prune once with tools/prune.py and load that checkpoint.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Writes the pruning record into ``checkpoint['meta']['pruning']``."""
        if self.record is not None:
            checkpoint.setdefault('meta', {})['pruning'] = self.record

    def before_train(self, runner) -> None:
        """Fails loudly if a deferred rebuild never happened (no checkpoint loaded)."""
        if self._deferred:
            raise RuntimeError('DiffusionPruningHook deferred pruning to a checkpoint load '
                               'that did not happen; check load_from/resume.')

    def prune(self, runner) -> dict:
        """Prunes now: rank 0 computes the record, every rank applies it; returns it."""
        model = self._model(runner)
        old_params = _named_param_ids(model)
        record = self._compute_record(runner, model) if is_main_process() else None
        record = _broadcast(record)
        self._apply_record(runner, record, old_params)
        self._report(runner, record)
        return record

    # ----------------------------------------------------------------- internals
    def _checkpoint_will_load(self, runner) -> bool:
        """Mirrors ``Runner.load_or_resume``: will a checkpoint be loaded after this?"""
        if getattr(runner, '_has_loaded', False):
            return False
        if runner._load_from is not None:
            return True
        return bool(runner._resume) and find_latest_checkpoint(runner.work_dir) is not None

    def _model(self, runner) -> nn.Module:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, self.student_key):
            raise AttributeError(f'{type(model).__name__} has no attribute '
                                 f'{self.student_key!r}; set DiffusionPruningHook.student_key.')
        return model

    def _student_net(self, model: nn.Module) -> nn.Module:
        return unwrap_denoiser(getattr(model, self.student_key))

    def _ema_net(self, model: nn.Module) -> Optional[nn.Module]:
        ema = getattr(model, self.ema_key, None)
        return None if ema is None else unwrap_denoiser(ema.module)

    def _compute_record(self, runner, model: nn.Module) -> dict:
        loss_fn = None
        if self.importance in GRADIENT_IMPORTANCES:
            loss_fn = self._loss_fn(runner, model)
        _, record = prune_denoiser(self._student_net(model), self.ratio, self.importance,
                                   loss_fn=loss_fn, **self.prune_cfg)
        return record

    def _loss_fn(self, runner, model: nn.Module):
        if not callable(getattr(model, 'pruning_loss', None)):
            raise TypeError(
                f'importance={self.importance!r} needs {type(model).__name__}.pruning_loss'
                '(data_batch, timesteps) -> scalar (the student DSM loss); the model has '
                "none. Use importance='magnitude' or 'random', or add the method.")
        data_batch = _first_batch(runner.train_dataloader)
        batch_size = _batch_size(data_batch)

        def loss_fn(t: torch.Tensor) -> torch.Tensor:
            timesteps = t.repeat(batch_size) if batch_size else t
            return model.pruning_loss(data_batch, timesteps)

        return loss_fn

    def _apply_record(self, runner, record: dict, old_params: Dict[int, str]) -> None:
        """Replays ``record`` where needed, then rebuilds what held the old parameters."""
        model = self._model(runner)
        rebuild_pruned(self._student_net(model), record)
        ema = getattr(model, self.ema_key, None)
        if ema is not None:
            retarget_average(ema, strip_model_wrappers(getattr(model, self.student_key)))
        self.record = record
        if callable(getattr(model, 'set_pruning_record', None)):
            model.set_pruning_record(record)  # losses bound to the student's layout
        _swap_optimizer_params(runner, model, old_params)
        _rewrap_model(runner, model)
        for hook in runner.hooks:
            if type(hook).__name__ == 'EMAHook' and getattr(hook, 'ema_model', None) is not None:
                hook.before_run(runner)  # rebuilds its copy from the pruned model

    def _report(self, runner, record: dict) -> None:
        stats = record['stats']
        lines = ['Pruning (student):', f'{"":8}{"dense":>16}{"pruned":>16}{"kept":>8}']
        for key in ('params', 'macs'):
            before, after = stats[f'{key}_before'], stats[f'{key}_after']
            if before:
                lines.append(f'{key:8}{before:16,.0f}{after:16,.0f}{after / before:8.3f}')
        print_log('\n'.join(lines), logger='current')
        if is_main_process():
            summary = dict(stats=stats, settings=record['settings'], heads=record['heads'])
            with open(osp.join(runner.work_dir, SUMMARY_FILE), 'w', encoding='utf-8') as f:
                json.dump(summary, f, indent=2)


def _named_param_ids(model: nn.Module) -> Dict[int, str]:
    """id(parameter) -> name, taken before parameters are replaced."""
    return {id(param): name for name, param in model.named_parameters()}


def _prefix_of(model: nn.Module, sub: nn.Module) -> str:
    """State-dict key prefix of submodule ``sub`` inside ``model``."""
    for name, module in model.named_modules():
        if module is sub:
            # Checkpoints hold no DDP wrapper segments (mmengine strips them on load,
            # the distiller's state_dict on save).
            kept, current = [], model
            for part in name.split('.') if name else []:
                if not (part == 'module' and is_model_wrapper(current)):
                    kept.append(part)
                current = current._modules[part]
            return ''.join(f'{part}.' for part in kept)
    raise ValueError(f'{type(sub).__name__} is not a submodule of {type(model).__name__}.')


def _first_batch(dataloader: DataLoader) -> dict:
    """The dataset's first batch, read without touching the training iterator.

    ``next(iter(dataloader))`` would share MMEngine's ``InfiniteSampler`` index generator
    with the train loop, and closing that throwaway iterator ends the loop's data. A loader
    of its own (same dataset, batch size, collate function and worker count, no shuffling)
    also leaves the training data order exactly as in an unpruned or resumed run.
    """
    loader = DataLoader(dataloader.dataset, batch_size=dataloader.batch_size, shuffle=False,
                        num_workers=dataloader.num_workers, collate_fn=dataloader.collate_fn)
    return next(iter(loader))


def _batch_size(data_batch) -> Optional[int]:
    """Batch size of a dataloader batch (``inputs`` tensor, list or dict of them)."""
    inputs = data_batch.get('inputs') if isinstance(data_batch, dict) else None
    if isinstance(inputs, dict) and inputs:
        inputs = next(iter(inputs.values()))
    if torch.is_tensor(inputs):
        return inputs.shape[0]
    if isinstance(inputs, (list, tuple)):
        return len(inputs)
    return None


def _broadcast(record: Optional[dict]) -> dict:
    """Rank 0's record on every rank (no-op without distributed training)."""
    holder = [record]
    broadcast_object_list(holder, src=0)
    if holder[0] is None:
        raise RuntimeError(f'Rank {get_rank()} received no pruning record from rank 0.')
    return holder[0]


def _optim_wrappers(runner) -> Sequence[OptimWrapper]:
    wrapper = getattr(runner, 'optim_wrapper', None)
    if isinstance(wrapper, OptimWrapperDict):
        return list(wrapper.values())
    if isinstance(wrapper, OptimWrapper):
        return [wrapper]
    return []  # not built (test/val runs) or a config dict


def _swap_optimizer_params(runner, model: nn.Module, old_params: Dict[int, str]) -> None:
    """Points optimizer param groups at the pruned parameters, keeping group settings."""
    new_params = dict(model.named_parameters())
    for wrapper in _optim_wrappers(runner):
        optimizer = wrapper.optimizer
        for group in optimizer.param_groups:
            swapped = []
            for param in group['params']:
                name = old_params.get(id(param))
                new = new_params.get(name) if name is not None else None
                if new is not None and new is not param:
                    # The state (e.g. Adam moments) has the dense shape: drop it. On
                    # resume mmengine loads the pruned state right after this hook.
                    optimizer.state.pop(param, None)
                    param = new
                swapped.append(param)
            group['params'] = swapped


def _rewrap_model(runner, model: nn.Module) -> None:
    """Rebuilds a DDP-style wrapper, whose buckets reference the old parameters."""
    if is_model_wrapper(runner.model):
        # MMSeparateDistributedDataParallel wrapped submodules in place; unwrap them
        # first, or the new wrapper nests the stale one (whose reducer still expects
        # the dense parameters' gradients and fails the next wrapped forward).
        for name, sub in list(model._modules.items()):
            model._modules[name] = strip_model_wrappers(sub) if sub is not None else sub
        runner.model = runner.wrap_model(runner.cfg.get('model_wrapper_cfg'), model)
