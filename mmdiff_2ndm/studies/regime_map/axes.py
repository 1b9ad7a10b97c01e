"""The axes of the regime map: pruning levels, recipes, samplers, and the presets.

A *cell* is (level, recipe); a *run* is (level, recipe, seed): one finetuning run, scored
with every sampler on the same checkpoint. Everything here is plain data, so that a
later sitting can add a level or a recipe without touching the driver.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

# Layers whose output is 16 channels wide in the digits teacher (block_out_channels (16, 32),
# 4 GroupNorm groups: 4 channels per group). Ignored by the harder levels: a 4-channel
# group keeps >= 3 channels only at a ratio <= 0.25, and prune_denoiser has one
# groupnorm_ratio for every GroupNorm-tied group, so pruning the 32-wide stage harder
# than 0.25 would cut these groups to 2 or 1 channels.
STAGE16_LAYERS = ('conv_in', 'down_blocks.0.resnets.0.conv1', 'down_blocks.0.resnets.0.conv2',
                  'down_blocks.0.downsamplers.0.conv', 'up_blocks.1.resnets.0.conv1',
                  'up_blocks.1.resnets.0.conv2', 'up_blocks.1.resnets.0.conv_shortcut',
                  'up_blocks.1.resnets.1.conv1', 'up_blocks.1.resnets.1.conv2',
                  'up_blocks.1.resnets.1.conv_shortcut')
MIN_GROUP_CHANNELS = 3  # the map's rule: no GroupNorm group pruned below 3 channels


class Level(NamedTuple):
    """A pruning level: DiffusionPruningHook settings and what they give on the teacher.

    Attributes:
        ratio (float): The hook's ``ratio`` (groups not tied to a GroupNorm).
        groupnorm_ratio (float): ``prune_cfg.groupnorm_ratio``.
        ignored (Tuple[str, ...]): ``prune_cfg.ignored_layers`` (kept at full width).
        params (int): Student parameters on its architecture's teacher (measured by
            ``tests/test_studies/test_regime_map/test_map_axes.py``).
        min_group (int): Fewest channels of any GroupNorm group of the student (0 for a
            DiT, which has none).
        note (str): How the level is reached and where the 3-channel rule binds.
        arch (str): The teacher architecture it prunes, a key of :data:`ARCHS`.
            Defaults to 'unet'.
        depth (Tuple[int, int], optional): Depth pruning instead of width: keep N of
            every M blocks, ``(N, M)``, chosen by TinyFusion's learnable selector.
            Defaults to None.
    """
    ratio: float
    groupnorm_ratio: float
    ignored: Tuple[str, ...]
    params: int
    min_group: int
    note: str
    arch: str = 'unet'
    depth: Optional[Tuple[int, int]] = None


TEACHER_PARAMS = 177427
# Where the 3-channel rule binds (the report prints this)
RULE_NOTE = (
    'The teacher\'s GroupNorm groups hold 4 channels in the 16-wide stage and 8 in the '
    '32-wide stage (more where skip connections are concatenated). prune_denoiser prunes '
    'every GroupNorm-tied group at one ratio, keeping int(n (1 - r)) of each group\'s n '
    'channels, so a 4-channel group keeps 3 only for r <= 0.25 and an 8-channel group only '
    'for r <= 0.625. At r = 0.25 everywhere the student is 56.7 % of the teacher; pruning '
    'the 32-wide stage harder needs the 16-wide stage left out (ignored_layers, 4 of 4 '
    'kept), and 3 of 8 in the 32-wide stage is that stage\'s floor: 26.9 % is the smallest '
    'student that keeps >= 3 channels per group (with per-stage ratios, which '
    'prune_denoiser does not offer, 3 of 4 in the 16-wide stage would take it a little '
    'lower). About 15 % breaks the rule: ratio 0.55 everywhere gives 13.6 % with 1 channel '
    'per group in the 16-wide stage (level p14, defined, not screened). The map\'s levels: '
    '56.7 %, 36.8 % and 26.9 %.')
LEVELS: Dict[str, Level] = {
    # today's study: 3 of 4 / 6 of 8 channels in every group
    'p57': Level(0.25, 0.25, (), 100671, 3, 'ratio 0.25 everywhere (the README study)'),
    'p37': Level(0.5, 0.5, STAGE16_LAYERS, 65219, 4,
                 '16-wide stage kept (4 of 4), 32-wide stage 4 of 8'),
    # the smallest student this teacher allows with >= 3 channels per GroupNorm group
    # through prune_denoiser: 3 of 8 channels is the floor of the 32-wide stage's groups
    'p27': Level(0.625, 0.625, STAGE16_LAYERS, 47727, 3,
                 '16-wide stage kept (4 of 4), 32-wide stage 3 of 8: the 3-channel floor '
                 'of both stages'),
    # ~15 % breaks the rule: 1 channel per group in the 16-wide stage (instance norm);
    # defined for a later sitting to decide on, not screened
    'p14': Level(0.55, 0.55, (), 24067, 1,
                 'ratio 0.55 everywhere: 16-wide stage 1 of 4 (breaks the 3-channel rule)'),
    # depth-pruned DiT students (TinyFusion's setting: whole blocks dropped, N of every M
    # kept by the learnable selector); width untouched
    'd4': Level(0.0, 0.0, (), 117100, 0, '4 of 8 blocks (1 of every 2), learnable selection',
                arch='dit', depth=(1, 2)),
    'd2': Level(0.0, 0.0, (), 60012, 0, '2 of 8 blocks (1 of every 4), learnable selection',
                arch='dit', depth=(1, 4)),
    # about 15 %: out of the U-Net's reach under the 3-channel rule, not the DiT's
    'd1': Level(0.0, 0.0, (), 31468, 0, '1 of 8 blocks, learnable selection', arch='dit',
                depth=(1, 8)),
}
# Steps of TinyFusion's learnable block selection (Gumbel-softmax over the N:M patterns,
# trained with the weights on training batches) before a depth-pruned run trains
DEPTH_SEARCH_STEPS = 200


class Arch(NamedTuple):
    """A teacher architecture of the map: every run of a map has the same one.

    Attributes:
        teacher_config (str): Config in configs/digits/ that trains the dense teacher.
        net (dict, optional): The denoiser put in place of the configs' (the teacher
            run's ``model.student``, every student run's ``model.teacher``); None keeps
            the configs' U-Net.
        params (int): Parameters of the teacher.
        feat_options (Tuple[str, ...]): --cfg-options that make a recipe's feature term
            (``model.losses.feat``) the one the field uses for this architecture;
            ``{iters}`` in them stands for the run's length (:meth:`feature_options`).
        levels_note (str): How its levels are reached (the report prints it).
        text (str): How the report describes the teacher.
        label (str): How the report names the architecture.
    """
    teacher_config: str
    net: Optional[dict]
    params: int
    feat_options: Tuple[str, ...]
    levels_note: str
    text: str
    label: str

    def feature_options(self, iters: Union[int, str]) -> List[str]:
        """The feature term's --cfg-options for a run of ``iters`` iterations (a str
        stands for the length where the options are shown, not run)."""
        return [option.format(iters=iters) for option in self.feat_options]


# The DiT of configs/digits/_base_/dit_digits16.py at half its width (2 heads x 16): a
# teacher of the U-Net's size (231k against 177k parameters) and cost on the CPU
DIT_NET = dict(type='DiTTransformer2DModel', sample_size=16, in_channels=3, out_channels=3,
               num_layers=8, num_attention_heads=2, attention_head_dim=16, patch_size=2,
               num_embeds_ada_norm=10)
ARCHS: Dict[str, Arch] = {
    'unet': Arch('teacher_digits16.py', None, TEACHER_PARAMS, (), RULE_NOTE,
                 'dense DDPM U-Net of `configs/digits/teacher_digits16.py`', 'U-Net'),
    'dit': Arch('teacher_digits16_dit.py', DIT_NET, 231276,
                # TinyFusion's feature term, as configs/digits/2ndm_digits16_dit_d4.py: each
                # student block matched to the teacher block it was copied from, elements
                # beyond 2 sigma masked, weight 1e-2 x 768 decaying to 0 over the run.
                # BK-SDM's (weight 768, constant, no mask) on these blocks left seed 0 at d2
                # far behind DSM+KD (DDIM-50 proxy FID 162 against 89; docs/regime_map/dit/
                # archive/): TinyFusion's masking and decay exist for that reason
                ('model.losses.feat.layers=dit', 'model.losses.feat.block_map=auto',
                 'model.losses.feat.loss_weight=7.68', 'model.losses.feat.mask_sigma=2.0',
                 'model.losses.feat.weight_schedule=linear',
                 'model.losses.feat.schedule_iters={iters}'),
                'The DiT has no GroupNorm groups to keep: its levels drop whole blocks, '
                'keeping N of every M consecutive blocks, the pattern chosen by TinyFusion\'s '
                f'learnable selector ({DEPTH_SEARCH_STEPS} steps of a Gumbel-softmax over the '
                'N:M patterns, trained with the weights) and the kept blocks starting from the '
                'teacher\'s. d2 (25.9 %) is as hard as the U-Net\'s p27 (26.9 %) and is '
                'screened first (the plateau is measured there, as at p27); d1 (13.6 %) is the '
                'about-15 % level the U-Net cannot reach with >= 3 channels per GroupNorm '
                'group; d4 (50.6 %) is TinyFusion\'s D14-of-28 ratio.',
                'class-conditional pixel DiT of `configs/digits/teacher_digits16_dit.py` at '
                'half width (8 blocks of 2 heads x 16, patch 2)', 'DiT'),
}


def net_options(arch: str, key: str, changes: Optional[dict] = None) -> List[str]:
    """--cfg-options that put the architecture's denoiser (with ``changes``) at
    ``model.<key>`` (none for the configs' own U-Net)."""
    net = ARCHS[arch].net
    if net is None:
        return []
    net = dict(net, **(changes or {}))
    return [f'model.{key}._delete_=True', *(f'model.{key}.{k}={v}' for k, v in net.items())]


def level_options(name: str) -> List[str]:
    """--cfg-options that set the pruning hook (custom_hooks.0 of configs/digits/) to a level."""
    level = LEVELS[name]
    if level.depth is not None:
        keep, group = level.depth
        return ['custom_hooks.0.method=depth', f'custom_hooks.0.depth_cfg.keep={keep}',
                f'custom_hooks.0.depth_cfg.group_size={group}',
                'custom_hooks.0.depth_cfg.selector=learnable',
                f'custom_hooks.0.depth_cfg.steps={DEPTH_SEARCH_STEPS}']
    opts = [f'custom_hooks.0.ratio={level.ratio}',
            f'custom_hooks.0.prune_cfg.groupnorm_ratio={level.groupnorm_ratio}']
    if level.ignored:
        opts.append(f'custom_hooks.0.prune_cfg.ignored_layers=[{",".join(level.ignored)}]')
    return opts


class Recipe(NamedTuple):
    """A finetuning recipe.

    Attributes:
        config (str): Config file in configs/digits/.
        options (Tuple[str, ...]): Further --cfg-options.
        reference (str): The recipe it is compared with, paired by seed.
        batch_size (int, optional): Overrides the preset's batch size; the run then
            trains ``preset batch / batch_size`` times as many iterations (as many
            samples seen). Defaults to None.
        label (str): Column label of the heatmaps.
        features (bool): Whether it has a feature term (``model.losses.feat``), which
            each architecture points at its own blocks (``Arch.feat_options``).
            Defaults to False.
        length (float): Its runs train this many times the map's run length (the cosine
            lr annealed over the whole run): longer, whether the plateau's length is long
            enough at every level; shorter, a recipe with a costlier iteration at its
            reference's wall-clock. Defaults to 1.
    """
    config: str
    options: Tuple[str, ...] = ()
    reference: str = 'dsm_kd'
    batch_size: Optional[int] = None
    label: str = ''
    features: bool = False
    length: float = 1


_LOG_RATIO = ('model.losses.jacobian.form=log_ratio', 'model.losses.jacobian.scale=None')
# configs/digits/2ndm_digits16_dsm_kd_feat.py's feature term, added to a 2ndM config
_FEAT = ('model.losses.feat.type=FeatureKDLoss', 'model.losses.feat.layers=bk-sdm',
         'model.losses.feat.reduction=mean', 'model.losses.feat.loss_weight=768.0')
# the authors' released CIFAR-10 run: unscaled, weight 0.1, one projection, whole batch,
# J^T v by double backward, lr 2e-4, global batch 2
_AUTHORS = ('model.losses.jacobian.mode=vjp', 'optim_wrapper.student.optimizer.lr=0.0002')
# weight 10, a quarter of the batch (the config's); the budget preset's runs derive from these
_2NDM = Recipe('2ndm_digits16.py', label='+2ndM sigma')
_2NDM_LOG = Recipe('2ndm_digits16.py', _LOG_RATIO, label='+2ndM log')
RECIPES: Dict[str, Recipe] = {
    'dsm_kd': Recipe('2ndm_digits16_dsm_kd.py', reference='', label='DSM+KD'),
    'dsm': Recipe('2ndm_digits16_dsm.py', label='DSM'),
    'dsm_kd_feat': Recipe('2ndm_digits16_dsm_kd_feat.py', label='+feat KD', features=True),
    '2ndm': _2NDM,
    '2ndm_log': _2NDM_LOG,
    # feature KD + a 2ndM form, against feature KD alone: what the Jacobian term adds to
    # the feature term (the form: combine.better_form, from the screen)
    'feat_2ndm': Recipe('2ndm_digits16.py', _FEAT, reference='dsm_kd_feat',
                        label='+feat +2ndM sigma', features=True),
    'feat_2ndm_log': Recipe('2ndm_digits16.py', _LOG_RATIO + _FEAT, reference='dsm_kd_feat',
                            label='+feat +2ndM log', features=True),
    # dose-response of the log-ratio term: 10x and 100x its weight. At weight 10 it ends
    # near 1e-4 of the loss and leaves the small-t Jacobian error where DSM+KD leaves it;
    # whether a stronger term closes that error, and at what cost in proxy FID, tells a
    # weak term from a useless one
    '2ndm_log_w100': Recipe('2ndm_digits16.py',
                            _LOG_RATIO + ('model.losses.jacobian.loss_weight=100.0',),
                            label='+2ndM log w100'),
    '2ndm_log_w1000': Recipe('2ndm_digits16.py',
                             _LOG_RATIO + ('model.losses.jacobian.loss_weight=1000.0',),
                             label='+2ndM log w1000'),
    # DSM+KD for twice the run length, seed 0 at every level: the plateau is measured at
    # the hardest level only, so whether the other levels (and the DiT's 1-block students,
    # far from recovered) would still gain from a longer run is checked, not assumed
    'dsm_kd_x2': Recipe('2ndm_digits16_dsm_kd.py', length=2, label='DSM+KD 2x long'),
    # Both 2ndM forms for half the run length, their own cosine lr annealed over it: at
    # about DSM+KD's wall-clock, since the Jacobian term doubles an iteration's time within
    # 10 % (timing.json: 1.82-1.99x). A full run's halfway checkpoint is no stand-in: its
    # lr is still at half its peak
    '2ndm_half': _2NDM._replace(length=0.5, label='+2ndM sigma, half length'),
    '2ndm_log_half': _2NDM_LOG._replace(length=0.5, label='+2ndM log, half length'),
    'dsm_kd_b2': Recipe('2ndm_digits16_dsm_kd.py',
                        ('optim_wrapper.student.optimizer.lr=0.0002',), batch_size=2,
                        label='DSM+KD b2'),
    'authors_b2': Recipe('2ndm_digits16_unscaled.py', _AUTHORS, reference='dsm_kd_b2',
                         batch_size=2, label="authors' b2"),
}
REFERENCE = 'dsm_kd'

SAMPLERS: Dict[str, int] = {'ddim50': 50, 'ddim10': 10}  # name -> DDIM steps
MODELS = ('raw', 'ema')  # scored at the last checkpoint; the heatmaps show 'raw'

PRESETS = {
    # smoke test, not a measurement
    'tiny': dict(teacher_iters=4, teacher_interval=2, teacher_lr_min=1e-5,
                 finetune_iters=None, plateau_iters=4, plateau_interval=2,
                 batch_size=8, widths=(8, 16), num_samples=24, eval_images=8,
                 ftle_timesteps=(0, 100, 999), feature_iters=20, bootstrap=10,
                 samplers={'ddim50': 3, 'ddim10': 2}, levels=('p27',),
                 recipes=('dsm_kd', '2ndm_log'), seeds=(0,), plateau_level='p27'),
    # the screen: 3 paired seeds per cell, hardest level first. The map's own teacher:
    # teacher_digits16.py, seed 0, teacher_iters with a cosine lr (1e-3 -> teacher_lr_min)
    # over the whole run, its EMA scored every teacher_interval
    # (docs/regime_map/teacher_curve.json); its final checkpoint is the teacher.
    # finetune_iters is DSM+KD's plateau on seed 0 at the hardest level
    # (docs/regime_map/plateau.json); None = not measured yet
    'screen': dict(teacher_iters=16000, teacher_interval=2000, teacher_lr_min=1e-5,
                   finetune_iters=None, plateau_iters=8000,
                   plateau_interval=500, batch_size=32, widths=None, num_samples=500,
                   eval_images=128,
                   ftle_timesteps=(0, 2, 5, 10, 25, 50, 100, 250, 500, 750, 999),
                   feature_iters=1000, bootstrap=200, samplers=SAMPLERS,
                   levels=('p27', 'p37', 'p57'),
                   recipes=('dsm_kd', '2ndm_log', '2ndm', 'dsm_kd_feat', 'dsm'),
                   seeds=(0, 1, 2), plateau_level='p27'),
}
# The authors' recipe at its batch of 2 against DSM+KD at batch 2, at the hardest level
# (16x the iterations: as many samples seen). Not in 'screen' for its cost.
PRESETS['screen_b2'] = dict(PRESETS['screen'], levels=('p27',),
                            recipes=('dsm_kd_b2', 'authors_b2'))
# The log-ratio term's weight x10 and x100 against DSM+KD, seed 0 at the hardest level (a
# dose-response, one seed: a direction, not a verdict; more seeds with --seeds)
PRESETS['dose'] = dict(PRESETS['screen'], levels=('p27',),
                       recipes=('dsm_kd', '2ndm_log', '2ndm_log_w100', '2ndm_log_w1000'),
                       seeds=(0,))
# Feature KD + the better 2ndM form against feature KD, at the hardest level, 3 seeds: the
# form is named from the screen's results there (combine.better_form), so the preset's
# third recipe is added when the runs are planned ('combine': True)
PRESETS['combine'] = dict(PRESETS['screen'], levels=('p27',),
                          recipes=('dsm_kd', 'dsm_kd_feat'), combine=True)
# Both 2ndM forms at half the run length (about DSM+KD's wall-clock) against DSM+KD at
# the hardest level, the screen's seeds: what the term buys when the budget, not the
# iteration count, is fixed (the report's cost at equal wall-clock)
PRESETS['budget'] = dict(PRESETS['screen'], levels=('p27',),
                         recipes=('dsm_kd', '2ndm_log_half', '2ndm_half'))
# DSM+KD at twice the run length against DSM+KD, seed 0 at every level: is the length
# measured at the hardest level long enough everywhere (within the plateau rule's 5 %)?
PRESETS['length'] = dict(PRESETS['screen'], recipes=('dsm_kd', 'dsm_kd_x2'), seeds=(0,))
# The presets of one map: they share the results dir, the plateau and the report.
MAP_PRESETS = ('screen', 'screen_b2', 'dose', 'combine', 'budget', 'length')
# What a preset changes for another architecture than the U-Net: its levels (hardest
# first), the plateau's level and, for the smoke test, a smaller net
ARCH_PRESETS: Dict[Tuple[str, str], dict] = {
    ('dit', 'tiny'): dict(levels=('d2',), plateau_level='d2', widths=None,
                          net_changes=dict(num_layers=4, num_attention_heads=1,
                                           attention_head_dim=8)),
    ('dit', 'screen'): dict(levels=('d2', 'd1', 'd4'), plateau_level='d2'),
    ('dit', 'screen_b2'): dict(levels=('d2',), plateau_level='d2'),
    ('dit', 'dose'): dict(levels=('d2',), plateau_level='d2'),
    ('dit', 'combine'): dict(levels=('d2',), plateau_level='d2'),
    ('dit', 'budget'): dict(levels=('d2',), plateau_level='d2'),
    ('dit', 'length'): dict(levels=('d2', 'd1', 'd4'), plateau_level='d2'),
}


# The levels a data set's map covers where not every level its presets name: the second
# data set checks the digits' verdicts at the hardest level (issue 24, item 4)
MAP_LEVELS: Dict[Tuple[str, str], Tuple[str, ...]] = {('patches', 'unet'): ('p27',)}


def map_preset(name: str, arch: str = 'unet', dataset: str = 'digits') -> dict:
    """A preset of :data:`PRESETS` for one architecture of :data:`ARCHS` and one data set,
    with their names under ``'arch'`` and ``'dataset'``; its levels are those of the
    data set's map (:data:`MAP_LEVELS`) where that covers fewer.

    Raises:
        ValueError: On an unknown preset or architecture.
    """
    if name not in PRESETS:
        raise ValueError(f'Unknown preset {name!r}; known: {sorted(PRESETS)}.')
    if arch not in ARCHS:
        raise ValueError(f'Unknown architecture {arch!r}; known: {sorted(ARCHS)}.')
    preset = dict(PRESETS[name], arch=arch, dataset=dataset, net_changes={})
    if arch != 'unet':
        preset.update(ARCH_PRESETS[(arch, name)])
    scope = MAP_LEVELS.get((dataset, arch))
    if scope is not None and name in MAP_PRESETS:
        preset['levels'] = tuple(lv for lv in preset['levels'] if lv in scope)
    return preset


def planned_runs(preset: dict, levels: Optional[Sequence[str]] = None,
                 recipes: Optional[Sequence[str]] = None,
                 seeds: Optional[Sequence[int]] = None) -> List[Tuple[str, str, int]]:
    """(level, recipe, seed) in training order: level by level (the preset's order,
    hardest first), seed by seed within a level, so that an interrupted screen leaves
    whole seeds to compare; a recipe's reference is trained before it.

    Args:
        preset (dict): One of :data:`PRESETS`.
        levels, recipes, seeds: Override the preset's. Defaults to None.

    Raises:
        ValueError: On an unknown level or recipe, or a level of another architecture
            than the preset's (``preset['arch']``, default 'unet').
    """
    levels = list(levels or preset['levels'])
    recipes = list(recipes or preset['recipes'])
    arch = preset.get('arch', 'unet')
    for name in levels:
        if name not in LEVELS:
            raise ValueError(f'Unknown level {name!r}; known: {sorted(LEVELS)}.')
        if LEVELS[name].arch != arch:
            mine = sorted(k for k, lv in LEVELS.items() if lv.arch == arch)
            raise ValueError(f'Level {name!r} prunes the {LEVELS[name].arch} teacher, not '
                             f'this map\'s {arch}; its levels: {mine}.')
    for name in recipes:
        if name not in RECIPES:
            raise ValueError(f'Unknown recipe {name!r}; known: {sorted(RECIPES)}.')
    ordered: List[str] = []
    for name in recipes:  # references first
        ref = RECIPES[name].reference
        if ref and ref in recipes and ref not in ordered:
            ordered.append(ref)
        if name not in ordered:
            ordered.append(name)
    seeds = list(seeds if seeds is not None else preset['seeds'])
    return [(level, recipe, seed) for level in levels for seed in seeds for recipe in ordered]


def run_iters(preset: dict, recipe: str, finetune_iters: int) -> Tuple[int, int]:
    """(batch size, iterations) of a recipe's runs: a smaller batch trains proportionally
    more iterations, so every recipe sees as many samples; a recipe with a ``length``
    trains that many times as long (rounded to a whole iteration)."""
    batch = RECIPES[recipe].batch_size or preset['batch_size']
    return batch, round(RECIPES[recipe].length * finetune_iters * preset['batch_size'] / batch)


def run_name(level: str, recipe: str, seed: int) -> str:
    """The folder / result-file stem of a run."""
    return f'{level}/{recipe}_seed{seed}'
