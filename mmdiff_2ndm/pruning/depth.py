"""Depth pruning of DiT denoisers: whole transformer blocks removed, keep N of M per group.

The ``M`` blocks of a DiT are split into consecutive groups of ``group_size``; in every
group ``keep`` blocks stay (TinyFusion's N:M layer patterns; ``keep=1, group_size=2``
halves the depth). A selector decides which, from the table ``DEPTH_SELECTORS``:

* ``'output'`` (one shot): drop each block alone and measure the relative change of the
  model's output on calibration inputs; keep the blocks whose removal changes most.
* ``'cosine'`` (one shot, ShortGPT's block influence): ``1 - cos(input, output)`` of
  each block's hidden states on calibration inputs; keep the blocks that change their
  input most. One forward per input, so it suits the largest models.
* ``'learnable'`` (TinyFusion, Fang et al., 2025): a Gumbel-softmax over the N-of-M
  patterns of each group, trained jointly with the weights on the recovery loss for a
  short search; the argmax pattern of every group is kept. The weights the search
  trained are put back afterwards: the student starts from the teacher's blocks, as a
  record replayed on the teacher gives (the search only chooses).

Calibration inputs are what the net sees when ``loss_fn(t)`` (e.g. the distiller's DSM
loss on a real batch) runs at each calibration timestep, captured by a forward pre-hook,
or given directly as ``run_denoiser`` keywords.

The depth part of a pruning record is ``dict(module='transformer_blocks', kept=[teacher
block indices kept, ascending], num_blocks=M)``: student block ``i`` is teacher block
``kept[i]`` (what a feature loss maps; ``record.kept_blocks``).

Note:
    diffusers' DiT reads the output layer's conditioning from the first block's adaLN
    embedding (``transformer_blocks[0].norm1.emb``). Dropping block 0 therefore makes the
    first kept block's embedding the output layer's; in DiT checkpoints converted from
    the original code all blocks hold the same (shared) embedding, so nothing changes.
"""
import itertools
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from mmdiff_2ndm.models.denoisers import denoiser_family, run_denoiser, unwrap_denoiser
from .record import kept_blocks

# Family -> attribute of the ModuleList whose blocks depth pruning removes.
DEPTH_MODULES = {'dit': 'transformer_blocks'}

# One calibration call: runs the given (bare) net on fixed inputs, returns its prediction.
Call = Callable[[nn.Module], Tensor]


def depth_blocks(model: nn.Module) -> Tuple[str, nn.ModuleList]:
    """The attribute name and the ModuleList of the blocks depth pruning may remove.

    Args:
        model (nn.Module): A denoiser, possibly wrapped.

    Returns:
        tuple: ``(name, blocks)``, e.g. ``('transformer_blocks', net.transformer_blocks)``.

    Raises:
        ValueError: If the denoiser has no removable blocks (not a DiT).
    """
    net = unwrap_denoiser(model)
    family = denoiser_family(net)
    if family not in DEPTH_MODULES:
        raise ValueError(
            f'Depth pruning removes whole transformer blocks of a DiT (diffusers '
            f'DiTTransformer2DModel); {type(net).__name__} ({family!r}) has none. Use width '
            "pruning (method='width') for it, or BKSDMStudent for Stable Diffusion U-Nets.")
    name = DEPTH_MODULES[family]
    return name, getattr(net, name)


def block_groups(num_blocks: int, group_size: int) -> List[List[int]]:
    """Consecutive groups of block indices, ``[[0..g-1], [g..2g-1], ...]``.

    Raises:
        ValueError: If ``group_size`` does not divide ``num_blocks``.
    """
    if group_size < 1 or num_blocks % group_size:
        divisors = [g for g in range(1, num_blocks + 1) if not num_blocks % g]
        raise ValueError(f'group_size={group_size} must divide the {num_blocks} blocks '
                         f'(one of {divisors}).')
    return [list(range(start, start + group_size))
            for start in range(0, num_blocks, group_size)]


def keep_patterns(group_size: int, keep: int) -> List[Tuple[int, ...]]:
    """All ways to keep ``keep`` of ``group_size`` blocks (positions in the group).

    Raises:
        ValueError: If ``keep`` is not in ``[1, group_size]``.
    """
    if not 1 <= keep <= group_size:
        raise ValueError(f'keep={keep} blocks per group must lie in [1, group_size='
                         f'{group_size}]; to keep N of M, pass keep=N, group_size=M.')
    return list(itertools.combinations(range(group_size), keep))


def apply_depth(model: nn.Module, depth: Dict) -> bool:
    """Keeps only the blocks ``depth['kept']`` (in place; module names become 0..N-1).

    A net that already has ``len(kept)`` blocks is left as is (rebuilding twice is
    harmless).

    Args:
        model (nn.Module): The dense denoiser (possibly wrapped).
        depth (dict): The depth part of a pruning record.

    Returns:
        bool: Whether blocks were removed now.

    Raises:
        ValueError: If the net is not the dense model the record was made from.
    """
    net = unwrap_denoiser(model)
    blocks = getattr(net, depth['module'], None)
    if not isinstance(blocks, nn.ModuleList):
        raise ValueError(f"The pruning record removes blocks of {depth['module']!r}, which "
                         f'{type(net).__name__} does not have as a ModuleList.')
    kept, num_blocks = list(depth['kept']), int(depth['num_blocks'])
    if len(blocks) == len(kept):
        return False
    if len(blocks) != num_blocks:
        raise ValueError(
            f"The pruning record keeps {len(kept)} of {num_blocks} {depth['module']}; the "
            f'model has {len(blocks)}: rebuild from the dense model of the same config.')
    setattr(net, depth['module'], nn.ModuleList([blocks[i] for i in kept]))
    return True


def _output(out) -> Tensor:
    """The prediction tensor of a raw denoiser output (tensor, tuple or diffusers output)."""
    if torch.is_tensor(out):
        return out
    if hasattr(out, 'sample'):
        return out.sample
    return out[0]


def capture_calls(model: nn.Module, loss_fn: Callable[[Tensor], Tensor],
                  timesteps: Sequence[int], seed: int = 0) -> List[Call]:
    """The inputs the bare net receives while ``loss_fn(t)`` runs at each timestep.

    Args:
        model (nn.Module): The denoiser ``loss_fn`` runs (possibly wrapped).
        loss_fn (callable): ``loss_fn(t) -> scalar`` with ``t`` a 0-d LongTensor.
        timesteps (Sequence[int]): Calibration timesteps.
        seed (int): Seeds the global RNG for the calls (restored afterwards), so that
            the noise ``loss_fn`` draws is reproducible.

    Returns:
        list: One replayable call per call of the net (its inputs detached).
    """
    net = unwrap_denoiser(model)
    device = next(net.parameters()).device
    calls: List[Call] = []

    def record(module, args, kwargs):
        args = tuple(_detach(a) for a in args)
        kwargs = {k: _detach(v) for k, v in kwargs.items()}
        calls.append(lambda net: _output(net(*args, **kwargs)))

    handle = net.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []), \
                torch.no_grad():
            torch.manual_seed(seed)
            for t in timesteps:
                loss_fn(torch.tensor(int(t), dtype=torch.long, device=device))
    finally:
        handle.remove()
    if not calls:
        raise ValueError('loss_fn never called the denoiser being pruned; it must run '
                         'that net (e.g. the student DSM loss).')
    return calls


def _detach(value):
    return value.detach() if torch.is_tensor(value) else value


def calls_from_inputs(inputs: Sequence[Dict[str, Optional[Tensor]]]) -> List[Call]:
    """Calibration calls from ``run_denoiser`` keywords (``x_t``, ``timesteps``,
    ``condition``), as ``capture_calls`` returns them."""
    return [lambda net, item=dict(item): run_denoiser(net, **item) for item in inputs]


class DepthSelector(NamedTuple):
    """One way to choose the kept blocks.

    Attributes:
        select (callable): ``select(net, name, groups, keep, calls, loss_fn, **options)
            -> (kept, info)``: ascending kept indices and plain-data details
            (scores, probabilities) for the record's settings.
        needs_loss (bool): Whether it trains on ``loss_fn`` (not only calibration calls).
    """
    select: Callable[..., Tuple[List[int], dict]]
    needs_loss: bool = False


DEPTH_SELECTORS: Dict[str, DepthSelector] = {}


def register_depth_selector(name: str, needs_loss: bool = False):
    """Decorator adding ``select`` to ``DEPTH_SELECTORS`` under ``name``."""
    def register(select):
        if name in DEPTH_SELECTORS:
            raise ValueError(f'Depth selector {name!r} is already registered.')
        DEPTH_SELECTORS[name] = DepthSelector(select, needs_loss)
        return select
    return register


def keep_top(scores: Sequence[float], groups: Sequence[Sequence[int]], keep: int) -> List[int]:
    """In every group the ``keep`` blocks of highest score (ties: the earlier block)."""
    kept = []
    for group in groups:
        ranked = sorted(group, key=lambda i: (-scores[i], i))
        kept.extend(ranked[:keep])
    return sorted(kept)


@register_depth_selector('output')
def select_by_output_change(net: nn.Module, name: str, groups: List[List[int]], keep: int,
                            calls: List[Call], loss_fn=None, progress: bool = True,
                            **options) -> Tuple[List[int], dict]:
    """Keeps the blocks whose removal alone changes the output most (module docstring).

    Score of block i: ``sum ||f(x) - f_without_i(x)||^2 / sum ||f(x)||^2`` over the calls.
    """
    _no_options('output', options)
    blocks = getattr(net, name)
    with torch.no_grad():
        reference = [call(net) for call in calls]
        norm = sum(float(ref.pow(2).sum()) for ref in reference) or 1.0
        scores = []
        try:
            for i in tqdm(range(len(blocks)), desc='depth: drop one block', unit='block',
                          disable=not progress):
                setattr(net, name, nn.ModuleList([b for j, b in enumerate(blocks) if j != i]))
                change = sum(float((call(net) - ref).pow(2).sum())
                             for call, ref in zip(calls, reference))
                scores.append(change / norm)
        finally:
            setattr(net, name, blocks)
    return keep_top(scores, groups, keep), dict(scores=scores)


@register_depth_selector('cosine')
def select_by_block_influence(net: nn.Module, name: str, groups: List[List[int]], keep: int,
                              calls: List[Call], loss_fn=None, progress: bool = True,
                              **options) -> Tuple[List[int], dict]:
    """Keeps the blocks that change their hidden states most: ``1 - cos(in, out)``,
    averaged over tokens and calls (module docstring)."""
    _no_options('cosine', options)
    blocks = getattr(net, name)
    totals = [0.0] * len(blocks)
    counts = [0] * len(blocks)

    def measure(index):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs['hidden_states']
            cos = F.cosine_similarity(hidden_in.flatten(0, -2).double(),
                                      _output(output).flatten(0, -2).double(), dim=-1)
            totals[index] += float((1.0 - cos).sum())
            counts[index] += cos.numel()
        return hook

    handles = [block.register_forward_hook(measure(i), with_kwargs=True)
               for i, block in enumerate(blocks)]
    try:
        with torch.no_grad():
            for call in tqdm(calls, desc='depth: block influence', unit='call',
                             disable=not progress):
                call(net)
    finally:
        for handle in handles:
            handle.remove()
    scores = [total / max(count, 1) for total, count in zip(totals, counts)]
    return keep_top(scores, groups, keep), dict(scores=scores)


@register_depth_selector('learnable', needs_loss=True)
def select_by_learned_patterns(net: nn.Module, name: str, groups: List[List[int]],
                               keep: int, calls=None, loss_fn=None, progress: bool = True,
                               steps: int = 100, lr: float = 1e-4, mask_lr: float = 0.1,
                               tau: Tuple[float, float] = (4.0, 0.1),
                               timesteps: Optional[Sequence[int]] = None,
                               num_train_timesteps: int = 1000, seed: int = 0
                               ) -> Tuple[List[int], dict]:
    """TinyFusion's learnable N-of-M selection (module docstring).

    Each group has logits over its patterns; every step draws a straight-through hard
    Gumbel-softmax sample per group, gates each block as ``x + m_i (block(x) - x)`` with
    ``m_i`` the sampled pattern's membership, and takes one Adam step on the weights
    (``lr``) and the logits (``mask_lr``) of ``loss_fn(t)`` at a random timestep. The
    temperature anneals geometrically from ``tau[0]`` to ``tau[1]``.

    Args:
        steps (int): Search steps. Defaults to 100.
        lr (float): Learning rate of the weights (0 freezes them). Defaults to 1e-4.
        mask_lr (float): Learning rate of the pattern logits. Defaults to 0.1.
        tau (tuple[float, float]): Start and end temperature. Defaults to (4.0, 0.1).
        timesteps (Sequence[int], optional): Timesteps drawn from; defaults to
            ``range(num_train_timesteps)``.
        num_train_timesteps (int): Defaults to 1000.
        seed (int): Seeds the search (global RNG restored afterwards). Defaults to 0.

    Returns:
        tuple: Kept indices and ``dict(probabilities=[[p per pattern] per group],
        patterns=[...], losses=[first, last])``.
    """
    if steps < 1 or mask_lr <= 0 or lr < 0 or min(tau) <= 0:
        raise ValueError(f'steps={steps} must be >= 1, mask_lr={mask_lr} > 0, lr={lr} >= 0 '
                         f'and tau={tau} positive.')
    blocks = getattr(net, name)
    device = next(net.parameters()).device
    patterns = keep_patterns(len(groups[0]), keep)
    # membership[p, j]: pattern p keeps position j of its group
    membership = torch.zeros(len(patterns), len(groups[0]), device=device)
    for p, pattern in enumerate(patterns):
        membership[p, list(pattern)] = 1.0
    logits = torch.zeros(len(groups), len(patterns), device=device, requires_grad=True)
    gates = [torch.ones((), device=device) for _ in blocks]
    schedule = list(timesteps) if timesteps is not None else list(range(num_train_timesteps))

    def gate(index):
        def hook(module, args, kwargs, output):
            hidden_in = args[0] if args else kwargs['hidden_states']
            return hidden_in + gates[index] * (output - hidden_in)
        return hook

    snapshot = {k: v.detach().clone() for k, v in net.state_dict().items()}
    flags = {p: p.requires_grad for p in net.parameters()}
    was_training = net.training
    handles = [block.register_forward_hook(gate(i), with_kwargs=True)
               for i, block in enumerate(blocks)]
    weights = [p for p in net.parameters()]
    for param in weights:
        param.requires_grad_(lr > 0)
    groups_opt = [dict(params=[logits], lr=mask_lr)]
    if lr > 0:
        groups_opt.append(dict(params=weights, lr=lr))
    optimizer = torch.optim.Adam(groups_opt)
    losses = []
    try:
        net.train()
        with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
            torch.manual_seed(seed)
            for step in tqdm(range(steps), desc='depth: learnable search', unit='step',
                             disable=not progress):
                temperature = tau[0] * (tau[1] / tau[0]) ** (step / max(steps - 1, 1))
                sample = F.gumbel_softmax(logits, tau=temperature, hard=True)  # (G, P)
                mask = (sample @ membership).flatten()  # (G * group_size,) = (M,)
                for i in range(len(blocks)):
                    gates[i] = mask[i]
                t = schedule[int(torch.randint(len(schedule), ()))]
                loss = loss_fn(torch.tensor(int(t), dtype=torch.long, device=device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
    finally:
        for handle in handles:
            handle.remove()
        net.load_state_dict(snapshot)
        for param, flag in flags.items():
            param.requires_grad_(flag)
            param.grad = None
        net.train(was_training)
    best = logits.detach().argmax(dim=1).tolist()
    kept = sorted(group[j] for group, p in zip(groups, best) for j in patterns[p])
    probabilities = logits.detach().softmax(dim=1).tolist()
    return kept, dict(probabilities=probabilities, patterns=[list(p) for p in patterns],
                      losses=[losses[0], losses[-1]])


def _no_options(selector: str, options: dict) -> None:
    if options:
        raise ValueError(f'Depth selector {selector!r} takes no options {sorted(options)}; '
                         "those are for 'learnable'.")


def select_blocks(model: nn.Module,
                  keep: int,
                  group_size: int,
                  selector: str = 'output',
                  loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
                  calibration: Optional[Sequence[Dict[str, Optional[Tensor]]]] = None,
                  timesteps: Optional[Sequence[int]] = None,
                  seed: int = 0,
                  progress: bool = True,
                  **options) -> Tuple[dict, dict]:
    """Chooses the blocks to keep (the model is not changed).

    Args:
        model (nn.Module): A DiT denoiser, possibly wrapped.
        keep (int): Blocks kept per group (N of N:M).
        group_size (int): Blocks per group (M of N:M); must divide the block count.
        selector (str): A name in ``DEPTH_SELECTORS``. Defaults to ``'output'``.
        loss_fn (callable, optional): ``loss_fn(t) -> scalar`` running this net on real
            data (the distiller's DSM loss). The one-shot selectors capture the net's
            inputs from it; ``'learnable'`` trains on it.
        calibration (Sequence[dict], optional): ``run_denoiser`` keywords (``x_t``,
            ``timesteps``, ``condition``) to use instead of capturing them.
        timesteps (Sequence[int], optional): Calibration timesteps for the capture.
            Defaults to ``range(0, 1000, 100)``.
        seed (int): Seeds the capture and the search. Defaults to 0.
        progress (bool): Show progress bars. Defaults to True.
        **options: Selector options (``'learnable'``: ``steps``, ``lr``, ``mask_lr``,
            ``tau``, ``num_train_timesteps``).

    Returns:
        tuple: ``(depth, info)``: the record's depth part (``module``, ``kept``,
        ``num_blocks``) and the selector's plain-data details.

    Raises:
        ValueError: For a non-DiT model, ``keep``/``group_size`` that do not fit, an
            unknown selector or missing calibration data.
    """
    name, blocks = depth_blocks(model)
    net = unwrap_denoiser(model)
    groups = block_groups(len(blocks), group_size)
    keep_patterns(group_size, keep)
    if selector not in DEPTH_SELECTORS:
        raise ValueError(f'Unknown depth selector {selector!r}; choose one of '
                         f'{tuple(DEPTH_SELECTORS)}.')
    entry = DEPTH_SELECTORS[selector]
    calls = None
    if entry.needs_loss:
        if loss_fn is None:
            raise ValueError(f'Depth selector {selector!r} trains on loss_fn(t) -> scalar '
                             '(the DSM loss on real data); pass one.')
        options.setdefault('seed', seed)
        if timesteps is not None:
            options.setdefault('timesteps', timesteps)
    elif calibration is not None:
        calls = calls_from_inputs(calibration)
    elif loss_fn is not None:
        schedule = range(0, 1000, 100) if timesteps is None else timesteps
        calls = capture_calls(net, loss_fn, schedule, seed)
    else:
        raise ValueError(f'Depth selector {selector!r} needs calibration data: pass '
                         'loss_fn(t) (the DSM loss on a real batch) or calibration=[dict('
                         'x_t=..., timesteps=..., condition=...)].')
    was_training = net.training
    net.eval()  # dropout would make one-shot scores depend on the RNG
    try:
        kept, info = entry.select(net, name, groups, keep, calls, loss_fn=loss_fn,
                                  progress=progress, **options)
    finally:
        net.train(was_training)
    depth = dict(module=name, kept=[int(i) for i in kept], num_blocks=len(blocks))
    return depth, dict(selector=selector, keep=int(keep), group_size=int(group_size), **info)


BLOCK_MAP_RULES = ('kept', 'uniform')


def block_map(record: Optional[Dict], rule: str = 'kept') -> Optional[List[int]]:
    """The teacher block whose features student block ``i`` matches, for every ``i``.

    Args:
        record (dict, optional): A pruning record (None: dense student).
        rule (str): ``'kept'``: the block the student's block was copied from
            (``kept[i]``); ``'uniform'``: TinyFusion's evenly spaced map
            ``(i + 1) * M // N - 1`` (``2i + 1`` for 28 -> 14 blocks), whatever was kept.
            Defaults to ``'kept'``.

    Returns:
        list[int] | None: Teacher block indices, one per student block; None when the
        record removes no blocks.
    """
    if rule not in BLOCK_MAP_RULES:
        raise ValueError(f'rule={rule!r}; choose one of {BLOCK_MAP_RULES}.')
    kept = kept_blocks(record)
    if kept is None or rule == 'kept':
        return kept
    num_student, num_teacher = len(kept), int(record['depth']['num_blocks'])
    return [(i + 1) * num_teacher // num_student - 1 for i in range(num_student)]
