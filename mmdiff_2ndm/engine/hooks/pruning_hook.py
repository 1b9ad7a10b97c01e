"""DiffusionPruningHook: prunes the student before training and rebuilds it on load."""
from typing import Dict, Optional, Sequence

from mmengine.dist import broadcast_object_list, get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import find_latest_checkpoint
from torch import nn

from mmagic.registry import HOOKS
from mmdiff_2ndm.models.denoisers import strip_model_wrappers, unwrap_denoiser
from mmdiff_2ndm.pruning import (check_prune_settings, check_record, check_state_dict_shapes,
                                 data_losses, format_stats, get_importance, prune_model,
                                 write_summary)


@HOOKS.register_module()
class DiffusionPruningHook(Hook):
    """Structurally prunes ``model.<student_key>`` at the start of a run.

    Channels (``method='width'``), whole DiT blocks (``'depth'``) or both (``'depth+width'``,
    blocks first), all through :func:`mmdiff_2ndm.pruning.prune_model`.

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
        importance (str): A name in ``IMPORTANCE_CRITERIA`` (``'magnitude'``,
            ``'taylor'``, ``'diff-pruning'``, ``'random'``). Gradient criteria call
            ``model.pruning_loss(data_batch, timesteps)`` on one training batch.
            Defaults to ``'diff-pruning'``.
        student_key (str): Attribute of the model holding the student (bare diffusers
            model, DenoisingUnet or mmagic ``DiffusersWrapper``). Defaults to ``'student'``.
        ema_key (str): Attribute holding the student's EMA copy, if any. Defaults to
            ``'student_ema'``.
        prune_cfg (dict, optional): Further ``prune_denoiser`` keywords
            (``groupnorm_ratio``, ``ignored_layers``, ``round_to``, ``prune_num_heads``,
            ``head_ratio``, ``timesteps``, ``diff_pruning_thr``, ``target``, ``seed``).
            Defaults to None.
        method (str): ``'width'``, ``'depth'`` or ``'depth+width'``. Defaults to
            ``'width'``.
        depth_cfg (dict, optional): For depth pruning: ``keep`` and ``group_size`` (keep
            N of every M blocks), ``selector`` (``'output'``, ``'cosine'`` or TinyFusion's
            ``'learnable'``, whose search draws a new training batch per step),
            ``timesteps``, ``seed`` and the selector's options (``select_blocks``).
            Calibration inputs come from ``model.pruning_loss`` on training batches.
            Defaults to None.
    """

    # Before anything that copies or wraps parameters (EMAHook is NORMAL).
    priority = 'HIGHEST'

    def __init__(self,
                 ratio: float = 0.3,
                 importance: str = 'diff-pruning',
                 student_key: str = 'student',
                 ema_key: str = 'student_ema',
                 prune_cfg: Optional[dict] = None,
                 method: str = 'width',
                 depth_cfg: Optional[dict] = None):
        prune_cfg = dict(prune_cfg or {})
        for key in ('loss_fn', 'ratio', 'importance'):
            if key in prune_cfg:
                raise ValueError(f'prune_cfg must not set {key!r}; it is an argument of the '
                                 'hook (or, for loss_fn, comes from model.pruning_loss).')
        depth_cfg = dict(depth_cfg or {})
        if 'loss_fn' in depth_cfg:
            raise ValueError('depth_cfg must not set loss_fn; it comes from '
                             'model.pruning_loss.')
        self.width_cfg = (dict(ratio=ratio, importance=importance, **prune_cfg)
                          if 'width' in method else None)
        get_importance(importance)
        check_prune_settings(method, self.width_cfg, depth_cfg or None)
        self.ratio = ratio
        self.importance = importance
        self.method = method
        self.depth_cfg = depth_cfg or None
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
        loss_fn, depth_cfg = data_losses(model, self.method, self.width_cfg, self.depth_cfg,
                                         lambda: runner.train_dataloader)
        return prune_model(model, self.method, width=self.width_cfg, depth=depth_cfg,
                           loss_fn=loss_fn, student_key=self.student_key,
                           ema_key=self.ema_key)

    def _apply_record(self, runner, record: dict, old_params: Dict[int, str]) -> None:
        """Replays ``record`` where needed, then rebuilds what held the old parameters."""
        model = self._model(runner)
        # rebuilds the student (a no-op where it is pruned already), re-points its EMA and
        # hands the record to model.set_pruning_record
        prune_model(model, record=record, student_key=self.student_key, ema_key=self.ema_key)
        self.record = record
        _swap_optimizer_params(runner, model, old_params)
        _rewrap_model(runner, model)
        for hook in runner.hooks:
            if type(hook).__name__ == 'EMAHook' and getattr(hook, 'ema_model', None) is not None:
                hook.before_run(runner)  # rebuilds its copy from the pruned model

    def _report(self, runner, record: dict) -> None:
        print_log(format_stats(record), logger='current')
        if is_main_process():
            write_summary(record, runner.work_dir)


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
    """Points optimizer param groups at the pruned parameters, keeping group settings.

    A group gets the model's parameters under the names it held, in the model's order:
    what building the optimizer on the pruned model gives (depth pruning renumbers the
    kept blocks and removes the names of the last ones). The state of every replaced or
    removed parameter (e.g. Adam moments of the dense shape) is dropped; on resume
    mmengine loads the pruned state right after this hook.
    """
    new_params = list(model.named_parameters())
    for wrapper in _optim_wrappers(runner):
        optimizer = wrapper.optimizer
        for group in optimizer.param_groups:
            names = {old_params[id(p)] for p in group['params'] if id(p) in old_params}
            others = [p for p in group['params'] if id(p) not in old_params]
            swapped = [p for name, p in new_params if name in names] + others
            kept = {id(p) for p in swapped}
            for param in group['params']:
                if id(param) not in kept:
                    optimizer.state.pop(param, None)
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
