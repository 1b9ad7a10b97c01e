"""Under 2 gloo ranks a NaN on one rank makes every rank skip the update together."""
import json
import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RANK_SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist
from mmengine.optim import OptimWrapper

rank = int(os.environ['RANK'])
dist.init_process_group('gloo', rank=rank, world_size=2)
torch.set_num_threads(1)
import mmdiff_2ndm.models  # noqa: F401
from diffusers import UNet2DModel
from mmagic.registry import MODELS

torch.manual_seed(0)  # the same teacher and student on both ranks
teacher = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                      block_out_channels=(8, 16), norm_num_groups=4,
                      down_block_types=('DownBlock2D', 'DownBlock2D'),
                      up_block_types=('UpBlock2D', 'UpBlock2D'))
model = MODELS.build(dict(
    type='DiffusionDistiller', teacher=teacher,
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0)),
    ema=dict(momentum=0.5), data_preprocessor=dict(type='DataPreprocessor')))
optim = OptimWrapper(torch.optim.Adam(model.student.parameters(), lr=1e-3))
torch.manual_seed(rank)  # different data and noise per rank
batch = dict(inputs=[torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8) for _ in range(2)])
params = list(model.student.parameters())
before = [p.detach().clone() for p in params]
ema_before = [p.detach().clone() for p in model.student_ema.parameters()]

compute = model.compute_losses
def poisoned(*args, **kwargs):  # rank 1 only, first step only
    model.compute_losses = compute
    losses = compute(*args, **kwargs)
    losses['loss_kd'] = losses['loss_kd'] + float('nan')
    return losses
if rank == 1:
    model.compute_losses = poisoned
skips = [model.train_step(batch, optim)['nonfinite_skip'].item()]
unchanged = all(torch.equal(a, b) for a, b in zip(before, params)) and all(
    torch.equal(a, b) for a, b in zip(ema_before, model.student_ema.parameters()))
skips.append(model.train_step(batch, optim)['nonfinite_skip'].item())
flat = torch.cat([p.detach().flatten() for p in params])
with open(sys.argv[1], 'w') as f:
    json.dump(dict(skips=skips, unchanged=unchanged, weights=flat[::97].tolist(),
                   moved=not torch.equal(flat, torch.cat([b.flatten() for b in before]))), f)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_one_rank_nan_skips_the_update_on_every_rank(tmp_path):
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()),
               WORLD_SIZE='2', OMP_NUM_THREADS='1', PYTHONPATH=REPO)
    outs = [str(tmp_path / f'rank{rank}.json') for rank in (0, 1)]
    procs = [subprocess.Popen([sys.executable, '-c', RANK_SCRIPT, outs[rank]],
                              env=dict(env, RANK=str(rank)), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    logs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), '\n'.join(log[-3000:] for log in logs)
    results = [json.load(open(out)) for out in outs]
    for result in results:
        # rank 0's terms were finite, yet it skipped with rank 1: weights and EMA kept
        assert result['skips'] == [1.0, 0.0] and result['unchanged'], result
        assert result['moved']
    assert results[0]['weights'] == results[1]['weights']
