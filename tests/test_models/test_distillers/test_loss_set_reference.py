"""Every shipped config's losses are bit for bit what the fixed-trio distiller computed.

``tests/data/loss_set_reference.pth`` was written by ``main()`` below, run with the code
and configs of commit 0f43397 (before the open loss set: ``LOSS_KEYS`` dsm / kd /
jacobian and the distiller's ``jacobian_scale`` / ``jacobian_t_range`` /
``jacobian_warmup_iters``)::

    git worktree add /tmp/oldtree 0f43397
    PYTHONPATH=/tmp/oldtree:tests python \\
        tests/test_models/test_distillers/test_loss_set_reference.py /tmp/oldtree

For each config it holds the loss terms of two ``compute_losses`` calls of a distiller
built from the config's loss settings (losses, Jacobian schedule, reduction, training
scheduler, antithetic timesteps) around a tiny pixel U-Net teacher and a perturbed
student copy. Terms a config added later (e.g. ``loss_feat``) are not in it; every
term that is must come out identical.
"""
import functools
import glob
import os.path as osp
import sys
from typing import Dict

import pytest
import torch
from mmengine.config import Config

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller and its losses)
from mmagic.registry import MODELS

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
REFERENCE = osp.join(REPO, 'tests', 'data', 'loss_set_reference.pth')
LOSS_SETTINGS = ('losses', 'jacobian_scale', 'jacobian_t_range', 'jacobian_warmup_iters',
                 'pixel_reduction', 'antithetic_timesteps', 'per_sample_noise_seed')
# The reference was written with 2 torch threads (this machine's default); CPU kernels
# split their reductions by thread count, so another count changes the last bits (seen:
# 7e-7 relative in a Jacobian term with 1 thread). Every computation here uses 2.
THREADS = 2
UNET = dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
            block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
            up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=4)


@functools.lru_cache(maxsize=None)
def distiller_configs(root: str) -> Dict[str, str]:
    """Config name (relative path) -> file of every shipped distiller config."""
    found = {}
    for path in sorted(glob.glob(osp.join(root, 'configs', '**', '*.py'), recursive=True)):
        if '_base_' in path:
            continue
        model = Config.fromfile(path).model
        if model.get('type') == 'DiffusionDistiller':
            found[osp.relpath(path, root)] = path
    return found


def loss_terms(config_path: str) -> Dict[str, torch.Tensor]:
    """The loss terms of two ``compute_losses`` calls for the config's loss settings, with
    ``THREADS`` torch threads (the caller's count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _loss_terms(config_path)
    finally:
        torch.set_num_threads(threads)


def _loss_terms(config_path: str) -> Dict[str, torch.Tensor]:
    from diffusers import UNet2DModel
    model_cfg = Config.fromfile(config_path).model.to_dict()
    settings = {k: model_cfg[k] for k in LOSS_SETTINGS if k in model_cfg}
    scheduler = dict(model_cfg['noise_scheduler'], num_train_timesteps=100)
    torch.manual_seed(0)
    teacher = UNet2DModel(**UNET)
    model = MODELS.build(dict(type='DiffusionDistiller', teacher=teacher,
                              noise_scheduler=scheduler, num_inference_steps=2,
                              data_preprocessor=dict(type='DataPreprocessor'), **settings))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.student.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=gen))
    images = torch.rand(4, 3, 8, 8, generator=gen) * 2 - 1
    from mmagic.structures import DataSample
    samples = DataSample.stack([DataSample(metainfo=dict(sample_idx=i)) for i in range(4)])
    terms = {}
    torch.manual_seed(2)
    for call in range(2):
        for key, value in model.compute_losses(images, samples).items():
            terms[f'{call}.{key}'] = value.detach()
    return terms


@pytest.fixture(scope='module')
def reference() -> dict:
    return torch.load(REFERENCE, weights_only=True)


def test_every_config_of_the_reference_is_still_shipped(reference):
    assert len(reference) >= 15
    assert set(reference) <= set(distiller_configs(REPO))


def _reference_names():
    """The reference's configs (none while main() is writing it; the test above then
    fails on the missing file)."""
    return sorted(torch.load(REFERENCE, weights_only=True)) if osp.isfile(REFERENCE) else []


@pytest.mark.parametrize('name', _reference_names())
def test_losses_bitwise_equal_the_fixed_trio(name, reference):
    expected = reference[name]
    got = loss_terms(distiller_configs(REPO)[name])
    assert set(expected) <= set(got), f'{name}: terms {sorted(set(expected) - set(got))} gone'
    for key, value in expected.items():
        assert torch.equal(got[key], value), (name, key, got[key].item(), value.item())


def main(root: str = REPO) -> None:
    """Writes the reference from the configs under ``root`` (see the module docstring)."""
    reference = {name: loss_terms(path) for name, path in distiller_configs(root).items()}
    torch.save(reference, REFERENCE)
    for name, terms in reference.items():
        print(name, {k: round(v.item(), 6) for k, v in terms.items()})


if __name__ == '__main__':
    main(*sys.argv[1:])
