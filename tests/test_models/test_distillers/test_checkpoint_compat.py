"""A checkpoint written by an earlier version of the distiller still loads, strictly, and
reproduces that version's outputs for a fixed seed.

``tests/data/distiller_compat.pth`` was written by ``main()`` below (run as
``python tests/test_models/test_distillers/test_checkpoint_compat.py``) before the
distiller was split into collaborators: a tiny pixel U-Net teacher, its student pruned
by half, a warm-up EMA, two training steps with sample-tied draws. It is an MMEngine
checkpoint (``state_dict`` plus the pruning record in ``meta``) and holds the outputs
that version computed after loading it (``expected``). Regenerate it only for an
intended change of the checkpoint format or of the numbers, and say so in the commit.
"""
import os.path as osp
from typing import Dict

import torch
from diffusers import UNet2DModel
from mmagic.structures import DataSample
from mmengine.logging import MessageHub
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller and its losses)
from mmdiff_2ndm.models import DiffusionDistiller
from mmdiff_2ndm.models.denoisers import run_denoiser
from mmdiff_2ndm.pruning import prune_denoiser, rebuild_pruned
from mmdiff_2ndm.utils import safe_torch_load

CHECKPOINT = osp.join(osp.dirname(__file__), '..', '..', 'data', 'distiller_compat.pth')
SIZE = 8
NUM_T = 100
BATCH = 4


def _distiller(per_sample_noise_seed=7) -> DiffusionDistiller:
    """The fixture's distiller, dense, with a randomly initialised teacher."""
    torch.manual_seed(0)
    teacher = UNet2DModel(sample_size=SIZE, in_channels=3, out_channels=3,
                          layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4,
                          down_block_types=('DownBlock2D', 'DownBlock2D'),
                          up_block_types=('UpBlock2D', 'UpBlock2D'))
    return DiffusionDistiller(
        teacher=teacher,
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=NUM_T),
        num_inference_steps=2,
        losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=0.5),
                    jacobian=dict(loss_weight=0.1, seed=0)),
        jacobian_scale='sigma',
        per_sample_noise_seed=per_sample_noise_seed,
        ema=dict(type='WarmupExponentialMovingAverage', momentum=0.1),
        data_preprocessor=dict(type='DataPreprocessor'))


def _batch() -> dict:
    """Four uint8 images with their dataset indices (sample-tied draws need them)."""
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (BATCH, 3, SIZE, SIZE), generator=gen, dtype=torch.uint8)
    return dict(inputs=list(images),
                data_samples=[DataSample(metainfo=dict(sample_idx=i)) for i in range(BATCH)])


def _load(path: str, per_sample_noise_seed) -> DiffusionDistiller:
    """A fresh distiller with the checkpoint's pruned shapes and weights (strict)."""
    model = _distiller(per_sample_noise_seed)
    checkpoint = safe_torch_load(path, map_location='cpu')
    rebuild_pruned(model.student, checkpoint['meta']['pruning'])
    model.build_student_ema()  # re-points the EMA at the pruned student
    load_checkpoint(model, path, map_location='cpu', strict=True)
    return model.eval()


def _outputs(path: str) -> Dict[str, torch.Tensor]:
    """What the loaded checkpoint computes: predictions, losses, samples."""
    hub = MessageHub.get_instance('distiller_checkpoint_compat')
    hub.update_info('iter', 5)
    out = {}
    tied = _load(path, per_sample_noise_seed=7)
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    timesteps = torch.tensor([10, 60])
    with torch.no_grad():
        out['student_eps'] = run_denoiser(tied.student, x_t, timesteps)
        out['ema_eps'] = run_denoiser(tied.student_ema.module, x_t, timesteps)
        out['teacher_eps'] = run_denoiser(tied.teacher, x_t, timesteps)
    data = tied.data_preprocessor(_batch(), True)
    losses = tied.compute_losses(data['inputs'], data['data_samples'])
    out.update({f'tied_{k}': v.detach() for k, v in losses.items()})

    global_rng = _load(path, per_sample_noise_seed=None)
    torch.manual_seed(11)
    losses = global_rng.compute_losses(data['inputs'], data['data_samples'])
    out.update({f'global_{k}': v.detach() for k, v in losses.items()})
    noise = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    out['ema_sample'] = global_rng.sample(global_rng.student_ema.module, noise)
    torch.manual_seed(12)
    out['pruning_loss'] = global_rng.pruning_loss(_batch(), torch.tensor([5, 50, 95, 30]))
    return {k: v.detach() for k, v in out.items()}


def test_checkpoint_of_the_earlier_distiller_loads_and_reproduces():
    saved = safe_torch_load(CHECKPOINT, map_location='cpu')
    expected = saved['meta']['expected']
    actual = _outputs(CHECKPOINT)
    assert sorted(actual) == sorted(expected)
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-5, atol=1e-6, msg=key)


def main(path: str = CHECKPOINT) -> None:
    """Writes the fixture: prune, two training steps, checkpoint, expected outputs."""
    hub = MessageHub.get_instance('distiller_checkpoint_compat')
    model = _distiller()
    _, record = prune_denoiser(model.student, 0.5, 'magnitude', with_macs=False)
    model.build_student_ema()
    optim = OptimWrapperDict(
        student=OptimWrapper(torch.optim.Adam(model.student.parameters(), lr=1e-3)))
    model.train()
    for step in range(2):
        hub.update_info('iter', step)
        model.train_step(_batch(), optim)
    meta = dict(pruning=record)
    save_checkpoint(dict(meta=meta, state_dict=model.state_dict()), path)
    meta['expected'] = _outputs(path)
    save_checkpoint(dict(meta=meta, state_dict=model.state_dict()), path)
    print(f'wrote {path} ({osp.getsize(path) / 1024:.0f} KiB)')


if __name__ == '__main__':
    torch.set_num_threads(1)
    main()
