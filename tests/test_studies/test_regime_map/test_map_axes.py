"""The regime map's axes: each pruning level gives the parameters and GroupNorm group
sizes it states on its teacher (the digits U-Net, the map's DiT), every recipe's options
merge into its config for each architecture, and the run order."""
import argparse
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, DictAction

from mmdiff_2ndm.studies.digits.runs import CONFIG_DIR
from mmdiff_2ndm.studies.regime_map.axes import (ARCHS, DEPTH_SEARCH_STEPS, LEVELS,
                                                 MAP_PRESETS, MIN_GROUP_CHANNELS, PRESETS,
                                                 RECIPES,
                                                 TEACHER_PARAMS, level_options, map_preset,
                                                 net_options, planned_runs, run_iters)


def merged(config, options):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, config))
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    return cfg


def test_levels_give_the_stated_size_and_group_sizes_on_the_teacher():
    from diffusers import UNet2DModel

    from mmdiff_2ndm.pruning import prune_denoiser
    unet = dict(Config.fromfile(osp.join(CONFIG_DIR, 'teacher_digits16.py')).unet)
    unet.pop('type')
    teacher = UNet2DModel(**unet)
    assert sum(p.numel() for p in teacher.parameters()) == TEACHER_PARAMS
    for name, level in LEVELS.items():
        if level.arch != 'unet':
            continue
        net, record = prune_denoiser(copy.deepcopy(teacher), level.ratio, 'magnitude',
                                     groupnorm_ratio=level.groupnorm_ratio,
                                     ignored_layers=level.ignored, with_macs=False)
        assert record['stats']['params_after'] == level.params, name
        groups = [m.num_channels // m.num_groups for m in net.modules()
                  if isinstance(m, torch.nn.GroupNorm)]
        assert min(groups) == level.min_group, name
    # the screened levels keep the rule; the 15 % level is the one that breaks it
    assert all(LEVELS[lv].min_group >= MIN_GROUP_CHANNELS for lv in PRESETS['screen']['levels'])
    assert LEVELS['p14'].min_group < MIN_GROUP_CHANNELS


@pytest.mark.parametrize('recipe', sorted(RECIPES))
def test_recipe_and_level_options_merge_into_the_config(recipe):
    spec = RECIPES[recipe]
    cfg = merged(spec.config, [*level_options('p27'), *spec.options])
    hook = cfg.custom_hooks[0]
    assert hook.type == 'DiffusionPruningHook' and hook.ratio == 0.625
    assert hook.prune_cfg.groupnorm_ratio == 0.625
    assert list(hook.prune_cfg.ignored_layers) == list(LEVELS['p27'].ignored)
    losses = cfg.model.losses
    jac = losses.get('jacobian')
    if '2ndm_log' in recipe:
        assert jac.form == 'log_ratio' and jac.scale is None and jac.batch_fraction == 0.25
        assert jac.loss_weight == (float(recipe.split('_w')[1]) if '_w' in recipe else 10.0)
    if recipe in ('2ndm', 'feat_2ndm', '2ndm_half'):
        assert jac.scale == 'sigma' and jac.get('form', 'squared') == 'squared'
    if recipe == 'authors_b2':
        assert (jac.mode, jac.loss_weight, jac.scale) == ('vjp', 0.1, None)
        assert jac.batch_fraction == 1.0
        assert cfg.optim_wrapper.student.optimizer.lr == 2e-4
    if 'feat' in recipe:
        assert losses.feat.type == 'FeatureKDLoss' and losses.feat.layers == 'bk-sdm'
    if recipe in ('dsm_kd', 'dsm', 'dsm_kd_feat', 'dsm_kd_b2'):
        assert jac is None
    assert spec.reference in ('', 'dsm_kd', 'dsm_kd_b2', 'dsm_kd_feat')
    if recipe.startswith('feat_2ndm'):  # what 2ndM adds on top of the feature term
        assert spec.reference == 'dsm_kd_feat'
    if recipe == 'authors_b2':  # compared at its own batch
        assert RECIPES[spec.reference].batch_size == spec.batch_size == 2


def test_smaller_batches_see_as_many_samples():
    preset = PRESETS['screen']
    assert run_iters(preset, 'dsm_kd', 3000) == (32, 3000)
    assert run_iters(preset, 'authors_b2', 3000) == (2, 48000)


def test_the_length_check_trains_dsm_kd_twice_as_long_at_every_level():
    preset = PRESETS['length']
    assert run_iters(preset, 'dsm_kd_x2', 6500) == (32, 13000)
    assert RECIPES['dsm_kd_x2'].config == RECIPES['dsm_kd'].config
    assert RECIPES['dsm_kd_x2'].options == RECIPES['dsm_kd'].options
    assert RECIPES['dsm_kd_x2'].reference == 'dsm_kd'
    runs = planned_runs(preset)
    assert runs == [(lv, rc, 0) for lv in ('p27', 'p37', 'p57') for rc in ('dsm_kd', 'dsm_kd_x2')]
    dit = map_preset('length', 'dit')
    assert [lv for lv, _, _ in planned_runs(dit)][::2] == ['d2', 'd1', 'd4']


def test_the_budget_trains_each_2ndm_form_half_as_long_as_its_full_run():
    """At about DSM+KD's wall-clock (the term doubles an iteration's time): the same
    iteration as the full recipe, half the iterations, its own lr schedule over them."""
    preset = PRESETS['budget']
    for half, full in (('2ndm_half', '2ndm'), ('2ndm_log_half', '2ndm_log')):
        assert run_iters(preset, half, 13000) == (32, 6500)
        assert run_iters(preset, half, 7501) == (32, 3750)  # a whole number of iterations
        assert (RECIPES[half].config, RECIPES[half].options, RECIPES[half].reference) == \
            (RECIPES[full].config, RECIPES[full].options, RECIPES[full].reference)
        assert RECIPES[half].length == 0.5 and RECIPES[full].length == 1
    assert planned_runs(preset) == [('p27', rc, s) for s in (0, 1, 2)
                                    for rc in ('dsm_kd', '2ndm_log_half', '2ndm_half')]
    assert [lv for lv, _, _ in planned_runs(map_preset('budget', 'dit'))] == ['d2'] * 9
    assert 'budget' in MAP_PRESETS


def test_run_order_references_first_seed_by_seed():
    preset = PRESETS['screen']
    runs = planned_runs(preset, levels=['p27'], recipes=['authors_b2', '2ndm'], seeds=[0, 1])
    # seed by seed; authors_b2's reference is not planned, so the given order stays
    assert runs == [('p27', 'authors_b2', 0), ('p27', '2ndm', 0), ('p27', 'authors_b2', 1),
                    ('p27', '2ndm', 1)]
    runs = planned_runs(preset, levels=['p27'], recipes=['authors_b2', 'dsm_kd_b2'], seeds=[0])
    assert runs == [('p27', 'dsm_kd_b2', 0), ('p27', 'authors_b2', 0)]
    full = planned_runs(preset)
    assert full[0] == ('p27', 'dsm_kd', 0) and len(full) == 3 * 5 * 3
    assert planned_runs(PRESETS['screen_b2'])[:2] == [('p27', 'dsm_kd_b2', 0),
                                                      ('p27', 'authors_b2', 0)]
    with pytest.raises(ValueError, match='Unknown level'):
        planned_runs(preset, levels=['p99'])


def test_the_map_trains_its_own_teacher_with_a_cosine_lr(tmp_path):
    from mmdiff_2ndm.studies.digits.runs import SHIPPED_TEACHER
    from mmdiff_2ndm.studies.regime_map import RegimeMap
    screen = RegimeMap('screen', str(tmp_path), str(tmp_path / 'results'), 1)
    iters = PRESETS['screen']['teacher_iters']
    # not the shipped (6000-iteration, constant-lr) teacher: the map's own run
    assert screen.teacher_ckpt != SHIPPED_TEACHER
    assert screen.teacher_ckpt == str(tmp_path / f'teacher_cosine{iters}' / f'iter_{iters}.pth')
    assert iters % PRESETS['screen']['teacher_interval'] == 0
    cfg = merged('teacher_digits16.py', screen.teacher_options())
    assert cfg.param_scheduler == dict(type='CosineAnnealingLR', by_epoch=False, T_max=iters,
                                       eta_min=PRESETS['screen']['teacher_lr_min'])
    assert cfg.randomness.seed == 0 and cfg.model.teacher is None  # the dense DDPM
    # students load the map's teacher
    assert f'model.teacher_ckpt.filename={screen.teacher_ckpt}' in screen.options(
        ('p27', 'dsm_kd', 0), 100, 32)
    tiny = RegimeMap('tiny', str(tmp_path), str(tmp_path / 'results'), 1)
    assert tiny.teacher_ckpt == str(tmp_path / 'teacher_cosine4' / 'iter_4.pth')


def test_the_patches_map_puts_its_data_set_in_every_run(tmp_path):
    """``dataset='patches'``: the teacher run and every student run train on
    SkimagePatches (the digits configs' keywords fit it); the digits map adds nothing."""
    from mmagic.registry import DATASETS
    from mmengine.registry import init_default_scope

    from mmdiff_2ndm.studies.regime_map import RegimeMap
    init_default_scope('mmagic')
    patches = RegimeMap('screen', str(tmp_path), str(tmp_path / 'results'), 1, 'patches')
    assert patches.feature_net == str(tmp_path / 'feature_net_patches.pt')
    run = ('p27', 'dsm_kd', 0)
    for config, options in (('teacher_digits16.py', patches.teacher_options()),
                            (RECIPES['dsm_kd'].config, patches.options(run, 100, 32))):
        cfg = merged(config, options)
        for loader in (cfg.train_dataloader, cfg.test_dataloader):
            assert loader.dataset.type == 'SkimagePatches'
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        assert len(dataset) == 4000 and dataset[0]['inputs'].shape == (3, 16, 16)
    digits = RegimeMap('screen', str(tmp_path), str(tmp_path / 'results'), 1)
    assert digits.dataset_options() == []
    assert merged(RECIPES['dsm_kd'].config, digits.options(run, 100, 32)) \
        .train_dataloader.dataset.type == 'SklearnDigits'
    with pytest.raises(ValueError, match="dataset must be one of \\['digits', 'patches'\\]"):
        RegimeMap('screen', str(tmp_path), str(tmp_path / 'results'), 1, 'mnist')


def test_dit_levels_give_the_stated_size_on_the_maps_dit():
    """The map's DiT is the digits DiT config at half width; each depth level keeps N of
    every M blocks and has the parameters it states (blocks are alike, so any pattern)."""
    from diffusers import DiTTransformer2DModel

    from mmdiff_2ndm.pruning.depth import apply_depth
    base = dict(Config.fromfile(osp.join(CONFIG_DIR, '_base_', 'dit_digits16.py')).dit)
    base.pop('_delete_')
    net_cfg = dict(ARCHS['dit'].net)
    assert net_cfg == dict(base, num_attention_heads=2)  # only the width differs
    net_cfg.pop('type')
    teacher = DiTTransformer2DModel(**net_cfg)
    assert sum(p.numel() for p in teacher.parameters()) == ARCHS['dit'].params
    assert ARCHS['unet'].params == TEACHER_PARAMS
    dit_levels = [name for name, level in LEVELS.items() if level.arch == 'dit']
    assert sorted(dit_levels) == ['d1', 'd2', 'd4']
    for name in dit_levels:
        keep, group = LEVELS[name].depth
        blocks = net_cfg['num_layers']
        kept = [g + i for g in range(0, blocks, group) for i in range(keep)]
        net = copy.deepcopy(teacher)
        assert apply_depth(net, dict(module='transformer_blocks', kept=kept, num_blocks=blocks))
        assert sum(p.numel() for p in net.parameters()) == LEVELS[name].params, name
    # d2 is as hard as the U-Net's hardest screened level, d1 about 15 %
    assert abs(LEVELS['d2'].params / ARCHS['dit'].params
               - LEVELS['p27'].params / TEACHER_PARAMS) < 0.02
    assert abs(LEVELS['d1'].params / ARCHS['dit'].params - 0.15) < 0.02


@pytest.mark.parametrize('recipe', sorted(RECIPES))
def test_dit_options_put_the_dit_and_its_depth_level_into_every_recipe(recipe):
    spec = RECIPES[recipe]
    options = [*net_options('dit', 'teacher'), *level_options('d2'), *spec.options,
               *(ARCHS['dit'].feature_options(7500) if spec.features else ())]
    cfg = merged(spec.config, options)
    assert dict(cfg.model.teacher) == ARCHS['dit'].net  # the U-Net's keys are gone
    hook = cfg.custom_hooks[0]
    assert hook.method == 'depth'
    assert dict(hook.depth_cfg) == dict(keep=1, group_size=4, selector='learnable',
                                        steps=DEPTH_SEARCH_STEPS)
    feat = cfg.model.losses.get('feat')
    assert (feat is not None) == spec.features == ('feat' in recipe)
    if feat is not None:  # TinyFusion's: block by block, masked, decaying over the run
        assert feat.type == 'FeatureKDLoss'
        assert (feat.layers, feat.block_map, feat.reduction) == ('dit', 'auto', 'mean')
        assert (feat.loss_weight, feat.mask_sigma) == (pytest.approx(7.68), 2.0)
        assert (feat.weight_schedule, feat.schedule_iters) == ('linear', 7500)
    # the teacher run trains the same DiT
    teacher = merged(ARCHS['dit'].teacher_config, net_options('dit', 'student'))
    assert dict(teacher.model.student) == ARCHS['dit'].net and teacher.model.teacher is None
    assert net_options('unet', 'teacher') == []


def test_map_presets_per_architecture():
    unet = map_preset('screen')
    assert unet['arch'] == 'unet' and unet['levels'] == PRESETS['screen']['levels']
    dit = map_preset('screen', 'dit')
    assert dit['levels'] == ('d2', 'd1', 'd4') and dit['plateau_level'] == 'd2'
    assert {k: v for k, v in dit.items() if k not in ('arch', 'levels', 'plateau_level')} \
        == {k: v for k, v in unet.items() if k not in ('arch', 'levels', 'plateau_level')}
    assert len(planned_runs(dit)) == 3 * 5 * 3
    assert planned_runs(map_preset('screen_b2', 'dit'))[0] == ('d2', 'dsm_kd_b2', 0)
    assert planned_runs(map_preset('dose', 'dit')) == [
        ('d2', 'dsm_kd', 0), ('d2', '2ndm_log', 0), ('d2', '2ndm_log_w100', 0),
        ('d2', '2ndm_log_w1000', 0)]  # the screen's seed-0 runs are shared, not redone
    with pytest.raises(ValueError, match="Level 'p27' prunes the unet teacher, not this "
                       "map's dit; its levels: \\['d1', 'd2', 'd4'\\]"):
        planned_runs(dit, levels=['p27'])
    with pytest.raises(ValueError, match="Level 'd2' prunes the dit teacher"):
        planned_runs(unet, levels=['d2'])
    with pytest.raises(ValueError, match='Unknown architecture'):
        map_preset('screen', 'vit')


def test_a_data_sets_map_covers_its_levels():
    """The patches' map checks the digits' verdicts at the hardest level (MAP_LEVELS): every
    step of it plans p27 alone; the digits' map and other presets keep their levels."""
    for name in MAP_PRESETS:
        patches = map_preset(name, 'unet', 'patches')
        assert patches['levels'] == ('p27',) and patches['dataset'] == 'patches'
        assert map_preset(name)['levels'] == PRESETS[name]['levels']
    assert map_preset('screen')['levels'] == ('p27', 'p37', 'p57')
    assert map_preset('tiny', 'unet', 'patches')['levels'] == PRESETS['tiny']['levels']
    assert map_preset('screen', 'dit', 'patches')['levels'] == ('d2', 'd1', 'd4')


def test_the_dit_map_trains_a_dit_teacher_and_depth_prunes_its_students(tmp_path):
    from mmdiff_2ndm.studies.regime_map import RegimeMap
    dit = RegimeMap('screen', str(tmp_path), str(tmp_path / 'results'), 1, arch='dit')
    assert dit.teacher_config == 'teacher_digits16_dit.py'
    cfg = merged(dit.teacher_config, dit.teacher_options())
    assert dict(cfg.model.student) == ARCHS['dit'].net
    assert cfg.param_scheduler.type == 'CosineAnnealingLR'
    for recipe in ('dsm_kd', 'dsm_kd_feat'):
        spec = RECIPES[recipe]
        cfg = merged(spec.config, dit.options(('d4', recipe, 1), 100, 32))
        assert dict(cfg.model.teacher) == ARCHS['dit'].net
        assert cfg.model.teacher_ckpt.filename == dit.teacher_ckpt
        assert cfg.custom_hooks[0].depth_cfg.group_size == 2
        assert cfg.randomness.seed == 1 and cfg.param_scheduler.T_max == 100
        if spec.features:  # the weight decays to 0 at the run's own end
            assert cfg.model.losses.feat.layers == 'dit'
            assert cfg.model.losses.feat.schedule_iters == 100
    # the tiny preset's smaller DiT, for the teacher and the students alike
    tiny = RegimeMap('tiny', str(tmp_path), str(tmp_path / 'results'), 1, arch='dit')
    small = dict(ARCHS['dit'].net, num_layers=4, num_attention_heads=1, attention_head_dim=8)
    assert dict(merged(tiny.teacher_config, tiny.teacher_options()).model.student) == small
    assert dict(merged('2ndm_digits16_dsm_kd.py',
                       tiny.options(('d2', 'dsm_kd', 0), 4, 8)).model.teacher) == small


def test_a_done_run_with_other_options_than_today_stops_the_screen(tmp_path):
    """A result trained before its recipe or level was redefined is not mixed into the
    map: the screen names it and the fix; a moved teacher checkpoint is no change."""
    import json

    from mmdiff_2ndm.studies.regime_map import RegimeMap
    dit = RegimeMap('screen', str(tmp_path / 'work'), str(tmp_path / 'results'), 1, arch='dit')
    runs = [('d2', 'dsm_kd', 0), ('d2', 'dsm_kd_feat', 0)]

    def set_length(iters):  # the map's run length: its plateau's
        (tmp_path / 'results' / 'plateau.json').write_text(json.dumps(dict(
            plateau=dict(iters=iters))))

    def store(run, options):
        path = tmp_path / 'results' / 'runs' / run[0] / f'{run[1]}_seed{run[2]}.json'
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(options=options)))

    moved = [o.replace(dit.teacher_ckpt, '/elsewhere/iter_16000.pth')
             for o in dit.options(runs[0], 7500, 32)]
    assert moved != dit.options(runs[0], 7500, 32)
    store(runs[0], moved)
    set_length(7500)
    dit.check_done(runs)  # the other run is not done: nothing to compare
    old_feat = [o for o in dit.options(runs[1], 7500, 32)
                if 'loss_weight' not in o and 'mask_sigma' not in o]
    store(runs[1], old_feat)
    with pytest.raises(ValueError, match=r"d2/dsm_kd_feat_seed0 \(stored options not in "
                       r"today's: \[\]; today's not stored: \['model.losses.feat.loss_weight"
                       r"=7.68', 'model.losses.feat.mask_sigma=2.0'\]\)\. Move their JSON"):
        dit.check_done(runs)
    store(runs[1], dit.options(runs[1], 7500, 32))
    dit.check_done(runs)
    set_length(6000)
    with pytest.raises(ValueError, match='dsm_kd_feat_seed0.*schedule_iters=7500'):
        dit.check_done(runs)  # a new plateau length changes every run
