"""The depth-pruning configs carry what they claim: TinyDiT-D14 keeps 14 of DiT-XL/2's 28
blocks, the digits DiT 4 of 8, both with TinyFusion's learnable selection and a feature
term mapped through the kept blocks."""
import os.path as osp

import pytest
from mmengine.config import Config

import mmdiff_2ndm  # noqa: F401  (registers the plugin, resolves its bases)
from mmdiff_2ndm.engine.hooks import DiffusionPruningHook
from mmdiff_2ndm.models.layouts import DIT_XL_2_256

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


@pytest.mark.parametrize('name, num_blocks, kept', [
    ('2ndm_imagenet_dit_d14.py', DIT_XL_2_256['num_layers'], 14),
    ('digits/2ndm_digits16_dit_d4.py', None, 4)])
def test_depth_configs_keep_what_they_say(name, num_blocks, kept):
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    hooks = [h for h in cfg.custom_hooks if h['type'] == 'DiffusionPruningHook']
    assert len(hooks) == 1
    settings = {k: v for k, v in hooks[0].items() if k != 'type'}
    hook = DiffusionPruningHook(**settings)  # validates the settings
    assert hook.method == 'depth' and hook.depth_cfg['selector'] == 'learnable'
    num_blocks = num_blocks or cfg.model.teacher.num_layers
    assert num_blocks * hook.depth_cfg['keep'] // hook.depth_cfg['group_size'] == kept
    feat = cfg.model.losses.feat
    assert (feat.type, feat.layers, feat.block_map, feat.mask_sigma) == (
        'FeatureKDLoss', 'dit', 'auto', 2.0)  # 'auto': kept[i] once depth-pruned
    assert feat.weight_schedule == 'linear' and feat.schedule_iters == cfg.train_cfg.max_iters
    for key in ('dsm', 'kd', 'jacobian'):  # the paper's losses stay
        assert cfg.model.losses[key] is not None, key
