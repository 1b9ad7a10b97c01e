"""The digits configs' foreach optimizer trains bitwise as the per-tensor loop would.

The regime map pairs and resumes runs across sittings; its configs switched Adam and the
gradient clipping to torch's foreach kernels (faster on CPU) while runs were part-trained.
That is sound only while both paths give the same weights bit for bit: this checks it on
the configs' own optimizer settings, so a torch upgrade that breaks it fails here.
"""
import copy
import os.path as osp

import pytest
import torch
from diffusers import UNet2DModel
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from helpers.distiller_assets import UNET_KWARGS

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))

pytestmark = pytest.mark.usefixtures('single_thread')


def _per_tensor(cfg: dict) -> dict:
    cfg = copy.deepcopy(cfg)
    for part in ('optimizer', 'clip_grad'):
        assert cfg[part].pop('foreach') is True, part
    return cfg


def _train(cfg: dict, steps: int = 6) -> tuple:
    torch.manual_seed(0)
    model = UNet2DModel(**UNET_KWARGS)
    wrapper = build_optim_wrapper(model, cfg)
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(2, UNET_KWARGS['in_channels'], 8, 8, generator=data)
        t = torch.randint(0, 100, (2,), generator=data)
        # large enough that the clipping (max_norm 1) acts
        loss = 1e3 * model(x, t).sample.square().mean()
        wrapper.update_params(loss)
    return ([p.detach().clone() for p in model.parameters()],
            wrapper.optimizer.state_dict()['state'])


@pytest.mark.parametrize('config', ['2ndm_digits16.py', 'teacher_digits16.py'])
def test_foreach_optimizer_is_bitwise_the_per_tensor_one(config):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'digits', config))
    student = cfg.optim_wrapper.student.to_dict()
    fused_weights, fused_state = _train(student)
    loop_weights, loop_state = _train(_per_tensor(student))
    assert all(torch.equal(a, b) for a, b in zip(fused_weights, loop_weights))
    for index, state in fused_state.items():
        for key in ('step', 'exp_avg', 'exp_avg_sq'):
            assert torch.equal(state[key], loop_state[index][key]), (index, key)
