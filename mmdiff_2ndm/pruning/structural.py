"""Structural pruning of diffusion denoisers over torch-pruning, and its exact replay.

``prune_denoiser`` removes channels / head dims / heads and returns a plain-data record;
``rebuild_pruned`` replays a record on a dense net of the same config without computing
any importance. Both end in the same attribute fix-up, so a rebuilt net is the pruned net.

Ratio semantics (torch-pruning 1.6.1, local pruning): in every prunable channel group a
fraction ``ratio`` of the channels is removed (``int(n * (1 - ratio))`` kept). Groups tied
to a GroupNorm are pruned per norm group (each of the G groups of n/G channels keeps
``int(n/G * (1 - r))``), so small groups round down hard; ``groupnorm_ratio`` sets their
``r`` separately. Parameters shrink roughly as ``(1 - ratio)^2``. Diff-Pruning's published
CIFAR-10 size (19.8M / 3.4G from 35.7M / 6.1G) is ``ratio=0.3, groupnorm_ratio=0.25``.

A GroupNorm over a concatenation (a U-Net up block's ``cat(hidden, skip)``) is pruned part
by part, each part by its own root's groups. Where the parts' widths do not line up with
the norm's groups, its groups after pruning hold channels of different groups before (the
digits U-Net, 32 + 16 channels in 4 groups: 2 of its 21 GroupNorms; the CIFAR-10 DDPM:
none); the norm still runs, and finetuning starts from it.
"""
import copy
import functools
from typing import (Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple,
                    TypeVar, Union)

import torch
import torch_pruning as tp
from torch import Tensor, nn

from mmdiff_2ndm.models.denoisers import (denoiser_family, example_denoiser_inputs,
                                          run_denoiser, unwrap_denoiser)
from .depth import apply_depth
from .importance import accumulate_gradients, get_importance
from .record import (RECORD_FORMAT, check_record, parameter_shapes, shape_mismatches,
                     to_plain_history)
from .rules import (check_group_norms, current_heads, fix_module_attributes,
                    ignored_layers_for, num_heads_for)

LayerRef = Union[str, nn.Module]
_Fn = TypeVar('_Fn', bound=Callable)


def _with_autograd(fn: _Fn) -> _Fn:
    """Runs ``fn(model, ...)`` with autograd on and every parameter of ``model`` requiring
    grad, also inside ``torch.no_grad()`` / ``inference_mode()`` and for a frozen model
    (each parameter's ``requires_grad`` is put back afterwards).

    torch-pruning builds its dependency graph by tracing ``grad_fn`` of a forward pass,
    and the gradient criteria backpropagate: under the usual inference contexts, or with
    frozen parameters, the trace is empty and nothing would be pruned ("Dependency graph
    relies on autograd for tracing"). Parameters created inside ``inference_mode`` are
    inference tensors and cannot be traced: build the model outside it.
    """
    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args, **kwargs):
        # by the name of the parameter: pruning swaps modules, so keep no references
        frozen = [name for name, p in model.named_parameters() if not p.requires_grad]
        model.requires_grad_(True)
        try:
            with torch.inference_mode(False), torch.enable_grad():
                return fn(model, *args, **kwargs)
        finally:
            params = dict(model.named_parameters())
            for name in frozen:
                if name in params:
                    params[name].requires_grad_(False)
    return wrapper  # type: ignore[return-value]


class _DenoiserCall(nn.Module):
    """Keyword-call adapter so op counters can run any family with one input dict."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x_t: Tensor, timesteps: Tensor, condition: Optional[Tensor] = None):
        return run_denoiser(self.net, x_t, timesteps, condition)


def _forward_fn(net: nn.Module, inputs: Dict[str, Tensor]) -> Tensor:
    """torch-pruning's ``forward_fn``: traces the uniform call, output (B, C, H, W)."""
    return run_denoiser(net, **inputs)


def count_params_macs(model: nn.Module,
                      example_inputs: Optional[Dict[str, Tensor]] = None,
                      with_macs: bool = True) -> Dict[str, Optional[float]]:
    """Parameters and multiply-accumulates of one denoiser forward at batch size 1.

    Args:
        model (nn.Module): The denoiser, possibly wrapped.
        example_inputs (dict, optional): ``example_denoiser_inputs`` (batch 1).
        with_macs (bool): Count MACs too (one forward of a deep copy).

    Returns:
        dict: ``params`` (int) and ``macs`` (float, or None without ``with_macs``).
    """
    net = unwrap_denoiser(model)
    params = sum(p.numel() for p in net.parameters())
    macs = None
    if with_macs:
        inputs = example_inputs or example_denoiser_inputs(net, batch_size=1)
        with torch.no_grad():
            macs, _ = tp.utils.count_ops_and_params(_DenoiserCall(net).eval(), inputs)
        macs = float(macs)
    return dict(params=params, macs=macs)


def _resolve_layers(net: nn.Module, layers: Iterable[LayerRef]) -> Dict[str, nn.Module]:
    """Module name -> module for layer names or modules inside ``net``."""
    names = {module: name for name, module in net.named_modules()}
    modules = dict(net.named_modules())
    resolved = {}
    for layer in layers:
        if isinstance(layer, str):
            if layer not in modules:
                raise ValueError(f'ignored layer {layer!r} is not a module of '
                                 f'{type(net).__name__}.')
            resolved[layer] = modules[layer]
        elif isinstance(layer, nn.Module) and layer in names:
            resolved[names[layer]] = layer
        else:
            raise ValueError(f'ignored layer {layer!r} is neither a module name nor a '
                             f'submodule of {type(net).__name__}.')
    return resolved


def _groupnorm_groups(graph: tp.DependencyGraph, ignored: Sequence[nn.Module],
                      root_module_types: Sequence[type]
                      ) -> Iterator[Tuple[nn.Module, List[nn.GroupNorm]]]:
    """The root layer and the GroupNorms of every prunable channel group that has one."""
    for group in graph.get_all_groups(ignored_layers=list(ignored),
                                      root_module_types=root_module_types):
        norms = [dep.target.module for dep, _ in group
                 if isinstance(dep.target.module, nn.GroupNorm)]
        if norms:
            yield group[0][0].target.module, norms


def _groupnorm_roots(net: nn.Module, inputs: Dict[str, Tensor],
                     ignored: Sequence[nn.Module]) -> list:
    """Root layer of every prunable channel group that contains a GroupNorm."""
    graph = tp.DependencyGraph().build_dependency(
        net, example_inputs=inputs, forward_fn=_forward_fn, verbose=False)
    return [root for root, _ in _groupnorm_groups(graph, ignored, [nn.Conv2d, nn.Linear])]


def _split_channel_groups(pruner: tp.pruner.MetaPruner) -> Dict[nn.Module, int]:
    """Channel groups of the roots whose output is split into chunks before a GroupNorm.

    A ResnetBlock2D with ``time_embedding_norm='scale_shift'`` (ADM, consistency models;
    mmagic's ``use_scale_shift_norm`` alike) projects the time embedding to ``2C`` and
    splits it into a scale and a shift for its ``C``-channel GroupNorm of ``G`` groups.
    torch-pruning maps channel ``i`` of both chunks to GroupNorm channel ``i``, and ranks
    the group at its root, the ``2C``-wide projection, in ``G`` blocks of ``2C / G``, each
    spanning two norm groups: the norm groups lose different numbers of channels, and the
    GroupNorm breaks or silently regroups channels. Declared as ``k * G`` channel groups
    (``k`` chunks), every block is one norm group of one chunk, and every block loses the
    same positions.

    Args:
        pruner (MetaPruner): The pruner, before ``step()``.

    Returns:
        dict: Root layer -> its channel groups, for ``pruner.out_channel_groups``.
    """
    groups = {}
    for root, norms in _groupnorm_groups(pruner.DG, pruner.ignored_layers,
                                         pruner.root_module_types):
        width = pruner.DG.get_out_channels(root)
        for norm in norms:
            if width > norm.num_channels and width % norm.num_channels == 0:
                chunks = width // norm.num_channels
                groups[root] = max(groups.get(root, 1), chunks * norm.num_groups)
    return groups


@_with_autograd
def prune_denoiser(model: nn.Module,
                   ratio: float = 0.3,
                   importance: str = 'magnitude',
                   *,
                   groupnorm_ratio: Optional[float] = None,
                   ignored_layers: Iterable[LayerRef] = (),
                   round_to: Optional[int] = None,
                   prune_num_heads: bool = False,
                   head_ratio: Optional[float] = None,
                   loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
                   timesteps: Optional[Sequence[int]] = None,
                   diff_pruning_thr: float = 0.05,
                   target: Optional[Dict[str, float]] = None,
                   with_macs: bool = True,
                   seed: int = 0) -> Tuple[nn.Module, dict]:
    """Structurally prunes a denoiser in place and returns it with its pruning record.

    Works inside ``torch.no_grad()`` / ``inference_mode()`` (autograd is switched on for
    the dependency trace and the gradient criteria).

    Args:
        model (nn.Module): A supported denoiser (see ``denoiser_family``), possibly
            wrapped; the bare net is pruned in place and wrappers are kept.
        ratio (float): Fraction of channels removed in each prunable group (module
            docstring), in [0, 1). Defaults to 0.3.
        importance (str): A name in ``IMPORTANCE_CRITERIA``: ``'magnitude'`` (L2 of the
            group's weights), ``'taylor'``, ``'diff-pruning'``, ``'random'`` or one
            registered with ``register_importance``. Defaults to ``'magnitude'``.
        groupnorm_ratio (float, optional): Ratio for groups tied to a GroupNorm.
            Defaults to ``ratio``.
        ignored_layers (Iterable[str | nn.Module]): Extra layers (names in the bare net
            or modules) whose output channels are kept, on top of the family's rules.
        round_to (int, optional): Keep channel counts multiples of this (torch-pruning
            skips GroupNorm-tied groups).
        prune_num_heads (bool): Remove whole attention heads instead of head dims.
        head_ratio (float, optional): Fraction of heads removed when
            ``prune_num_heads``. Defaults to ``ratio``.
        loss_fn (callable, optional): ``loss_fn(t) -> scalar`` with ``t`` a 0-d
            LongTensor, required by ``'taylor'`` and ``'diff-pruning'``.
        timesteps (Sequence[int], optional): Timesteps visited by the gradient
            criteria, in order. Defaults to ``range(0, 1000, 10)``.
        diff_pruning_thr (float): diff-pruning stops once a loss falls below
            ``thr * max_loss``. Defaults to 0.05 (Diff-Pruning's value).
        target (dict, optional): ``dict(params=N)`` or ``dict(macs=N)``: search the
            ratio (both ``ratio`` and ``groupnorm_ratio``, in proportion) whose pruned
            size is closest to N; ``ratio`` is then only the starting proportion.
        with_macs (bool): Count MACs before/after (costs two forwards of copies).
        seed (int): Seeds the random importance (global RNG state is restored).

    Returns:
        tuple: ``(model, record)``: the same (now pruned) model object and the plain-data
        pruning record (``record.py``).
    """
    criterion = get_importance(importance)
    _check_ratio('ratio', ratio)
    groupnorm_ratio = ratio if groupnorm_ratio is None else groupnorm_ratio
    _check_ratio('groupnorm_ratio', groupnorm_ratio)
    if criterion.needs_gradients and loss_fn is None:
        raise ValueError(f'importance={importance!r} needs loss_fn(t) -> scalar loss on real '
                         "training data; pass one or use 'magnitude'/'random'.")
    if target is not None:
        ratio, groupnorm_ratio = search_ratio(
            model, target, ratio=ratio, groupnorm_ratio=groupnorm_ratio,
            ignored_layers=ignored_layers, round_to=round_to,
            prune_num_heads=prune_num_heads, head_ratio=head_ratio)

    net = unwrap_denoiser(model)
    family = denoiser_family(net)
    inputs = example_denoiser_inputs(net, batch_size=1)
    before = count_params_macs(net, inputs, with_macs)
    user_ignored = _resolve_layers(net, ignored_layers)
    ignored = ignored_layers_for(net, family) + list(user_ignored.values())

    used_timesteps = []
    if criterion.needs_gradients:
        schedule = list(range(0, 1000, 10)) if timesteps is None else list(timesteps)
        thr = diff_pruning_thr if criterion.stops_at_threshold else None
        used_timesteps = accumulate_gradients(net, loss_fn, schedule, thr)

    num_heads = num_heads_for(net)
    ratio_dict = {}
    if groupnorm_ratio != ratio:
        ratio_dict = {root: groupnorm_ratio for root in _groupnorm_roots(net, inputs, ignored)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pruner = tp.pruner.MetaPruner(
            net, inputs, criterion.build(),
            pruning_ratio=ratio, pruning_ratio_dict=ratio_dict,
            ignored_layers=ignored, round_to=round_to,
            num_heads=num_heads, prune_num_heads=prune_num_heads,
            prune_head_dims=not prune_num_heads,
            head_pruning_ratio=(ratio if head_ratio is None else head_ratio)
            if prune_num_heads else 0.0,
            forward_fn=_forward_fn,
            # Fresh dicts: torch-pruning's defaults are shared, mutated module globals.
            in_channel_groups={}, out_channel_groups={})
        pruner.out_channel_groups.update(_split_channel_groups(pruner))
        pruner.step()
    heads = current_heads(net, pruner.num_heads)
    check_group_norms(net)
    fix_module_attributes(net, heads, inputs)
    net.zero_grad(set_to_none=True)

    after = count_params_macs(net, inputs, with_macs)
    record = dict(
        format=RECORD_FORMAT,
        family=family,
        history=to_plain_history(pruner.pruning_history()),
        heads=heads,
        shapes=parameter_shapes(net),
        settings=dict(
            ratio=float(ratio), groupnorm_ratio=float(groupnorm_ratio),
            importance=importance, ignored_layers=sorted(user_ignored),
            round_to=round_to, prune_num_heads=bool(prune_num_heads),
            head_ratio=None if head_ratio is None else float(head_ratio),
            timesteps_used=used_timesteps, seed=int(seed)),
        stats=dict(params_before=before['params'], params_after=after['params'],
                   macs_before=before['macs'], macs_after=after['macs']),
    )
    return model, record


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f'{name}={value} must lie in [0, 1) (fraction of channels removed).')


@_with_autograd
def rebuild_pruned(model: nn.Module, record: dict) -> nn.Module:
    """Replays a pruning record on a dense denoiser of the same config (in place).

    No importance is computed: the record names every removed block and channel. Removed
    blocks (``record['depth']``) go first, then channels. A net that already has the
    record's shapes is left as is, so rebuilding twice is harmless.
    Works inside ``torch.no_grad()`` / ``inference_mode()`` (autograd is switched on
    for the trace).

    Args:
        model (nn.Module): A dense denoiser built from the same config, possibly wrapped.
        record (dict): A record returned by ``prune_denoiser`` (or loaded from a
            checkpoint).

    Returns:
        nn.Module: ``model``, now with the pruned architecture (weights are the dense
        ones at the kept indices; load the pruned state dict next).

    Raises:
        ValueError: If the record does not belong to this family/architecture.
    """
    check_record(record)
    net = unwrap_denoiser(model)
    family = denoiser_family(net)
    if record['family'] != family:
        raise ValueError(f"Pruning record is for a {record['family']!r} denoiser, the model "
                         f'is {family!r}.')
    if record.get('depth') is not None:  # depth first: the history names the shallow net
        apply_depth(net, record['depth'])
    if not shape_mismatches(record['shapes'], parameter_shapes(net)):
        return model
    inputs = example_denoiser_inputs(net, batch_size=1)
    graph = tp.DependencyGraph().build_dependency(
        net, example_inputs=inputs, forward_fn=_forward_fn, verbose=False)
    try:
        graph.load_pruning_history([list(step) for step in record['history']])
    except (AttributeError, IndexError, RuntimeError) as err:
        raise ValueError(f'Pruning record does not fit this {type(net).__name__}: is it the '
                         f'dense model of the same config? ({err})') from err
    fix_module_attributes(net, record['heads'], inputs)
    mismatches = shape_mismatches(record['shapes'], parameter_shapes(net))
    if mismatches:
        raise ValueError('Replaying the pruning record gave other shapes than recorded; '
                         f'the model config differs from the pruned one: {mismatches[:3]}')
    return model


def search_ratio(model: nn.Module,
                 target: Dict[str, float],
                 ratio: float = 0.3,
                 groupnorm_ratio: Optional[float] = None,
                 steps: int = 12,
                 **prune_kwargs) -> Tuple[float, float]:
    """Bisects the pruning ratio whose pruned size is closest to a target.

    Sizes depend only on widths, not on which channels go, so candidates are pruned
    with magnitude importance on deep copies (the model itself is untouched).

    Args:
        model (nn.Module): The dense denoiser.
        target (dict): ``dict(params=N)`` or ``dict(macs=N)``.
        ratio (float): With ``groupnorm_ratio``, sets their proportion, kept
            during the search. Defaults to 0.3.
        groupnorm_ratio (float, optional): Defaults to ``ratio``.
        steps (int): Bisection steps. Defaults to 12.
        **prune_kwargs: ``ignored_layers``, ``round_to``, ``prune_num_heads``,
            ``head_ratio`` as for ``prune_denoiser``.

    Returns:
        tuple[float, float]: ``(ratio, groupnorm_ratio)`` of the closest candidate.
    """
    if not isinstance(target, dict) or len(target) != 1 or \
            next(iter(target)) not in ('params', 'macs'):
        raise ValueError(f'target={target!r}; give dict(params=N) or dict(macs=N).')
    key, goal = next(iter(target.items()))
    groupnorm_ratio = ratio if groupnorm_ratio is None else groupnorm_ratio
    base = max(ratio, groupnorm_ratio, 1e-6)
    share = (ratio / base, groupnorm_ratio / base)
    net = unwrap_denoiser(model)

    def size_at(scale: float) -> float:
        candidate = copy.deepcopy(net)
        _, rec = prune_denoiser(
            candidate, scale * share[0], 'magnitude', groupnorm_ratio=scale * share[1],
            with_macs=key == 'macs', **prune_kwargs)
        return rec['stats'][f'{key}_after']

    low, high = 0.0, 0.95
    best = (float('inf'), 0.0)
    for _ in range(steps):
        mid = (low + high) / 2
        size = size_at(mid)
        best = min(best, (abs(size - goal), mid))
        if size > goal:
            low = mid
        else:
            high = mid
    scale = best[1]
    return scale * share[0], scale * share[1]
