"""The regime map's axes: each pruning level gives the parameters and GroupNorm group
sizes it states on the digits teacher, every recipe's options merge into its config,
and the run order."""
import argparse
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config, DictAction

from mmdiff_2ndm.studies.digits.runs import CONFIG_DIR
from mmdiff_2ndm.studies.regime_map.axes import (LEVELS, MIN_GROUP_CHANNELS, PRESETS,
                                                 RECIPES, TEACHER_PARAMS, level_options,
                                                 planned_runs, run_iters)


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
    if recipe.endswith('log'):
        assert jac.form == 'log_ratio' and jac.loss_weight == 10.0
        assert jac.batch_fraction == 0.25
    if recipe in ('2ndm', 'feat_2ndm'):
        assert jac.scale == 'sigma' and jac.get('form', 'squared') == 'squared'
    if recipe == 'authors_b2':
        assert (jac.mode, jac.loss_weight, jac.scale) == ('vjp', 0.1, None)
        assert jac.batch_fraction == 1.0
        assert cfg.optim_wrapper.student.optimizer.lr == 2e-4
    if 'feat' in recipe:
        assert losses.feat.type == 'FeatureKDLoss' and losses.feat.layers == 'bk-sdm'
    if recipe in ('dsm_kd', 'dsm', 'dsm_kd_feat', 'dsm_kd_b2'):
        assert jac is None
    assert spec.reference in ('', 'dsm_kd', 'dsm_kd_b2')
    if recipe == 'authors_b2':  # compared at its own batch
        assert RECIPES[spec.reference].batch_size == spec.batch_size == 2


def test_smaller_batches_see_as_many_samples():
    preset = PRESETS['screen']
    assert run_iters(preset, 'dsm_kd', 3000) == (32, 3000)
    assert run_iters(preset, 'authors_b2', 3000) == (2, 48000)


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
