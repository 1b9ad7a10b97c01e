"""A depth-pruned DiT run exported as a plain diffusers DiT: ``DiTTransformer2DModel`` and
``DiTPipeline`` load it in a process that never imports the plugin and sample the
distiller's images; tools/sample.py and init_distiller rebuild the run."""
import importlib.util
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmdiff_2ndm.apis import init_distiller
from mmdiff_2ndm.models.denoisers import example_denoiser_inputs
from mmdiff_2ndm.pruning import kept_blocks, prune_model

from helpers.denoisers import save_tiny_latent_dit

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
pytestmark = pytest.mark.usefixtures('single_thread')

CONFIG = """
default_scope = 'mmagic'
custom_imports = dict(imports=['mmdiff_2ndm'], allow_failed_imports=False)
model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='DiTTransformer2DModel', from_pretrained={teacher!r}),
    vae=dict(type='AutoencoderKL', from_pretrained={vae!r}),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
    num_inference_steps=2,
    data_preprocessor=dict(type='DataPreprocessor'))
"""

# Runs with the plugin unimportable (as if not installed): only diffusers reads the folder.
PLAIN_DIFFUSERS = """
import sys
sys.modules['mmdiff_2ndm'] = None  # any import of the plugin now raises ImportError
import numpy as np, torch
from diffusers import DiTPipeline, DiTTransformer2DModel
out, result = sys.argv[1], sys.argv[2]
net = DiTTransformer2DModel.from_pretrained(out, subfolder='transformer')
pipe = DiTPipeline.from_pretrained(out)
images = pipe(class_labels=[2, 0], guidance_scale=1.0, num_inference_steps=2,
              generator=torch.Generator().manual_seed(3), output_type='np').images
assert not any(name.startswith('mmdiff_2ndm.') for name in sys.modules)
np.savez(result, images=images, num_layers=net.config.num_layers,
         blocks=len(pipe.transformer.transformer_blocks))
"""


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', osp.join(REPO, 'tools',
                                                                           f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def depth_run(tmp_path_factory) -> dict:
    """A 4-block latent DiT run whose student keeps 2 blocks (1 of every 2)."""
    root = tmp_path_factory.mktemp('depth_run')
    dit_folder, vae_folder = save_tiny_latent_dit(root, num_layers=4, head_dim=4)
    config = str(root / 'config.py')
    with open(config, 'w') as f:
        f.write(CONFIG.format(teacher=dit_folder, vae=vae_folder))
    model, _ = init_distiller(config)
    calibration = [example_denoiser_inputs(model.student, batch_size=2)]
    record = prune_model(model, 'depth', depth=dict(keep=1, group_size=2,
                                                    calibration=calibration),
                         progress=False)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = str(root / 'iter_2.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(pruning=record)), ckpt)
    return dict(config=config, ckpt=ckpt, model=model, record=record)


def test_init_distiller_rebuilds_the_depth_pruned_run(depth_run):
    model, record = init_distiller(depth_run['config'], depth_run['ckpt'])
    assert record == depth_run['record'] and len(kept_blocks(record)) == 2
    assert len(model.student.transformer_blocks) == 2
    assert len(model.teacher.transformer_blocks) == 4
    for name, value in depth_run['model'].state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_depth_pruned_dit_exports_as_a_plain_diffusers_dit(depth_run, tmp_path):
    out = _tool('export').main([depth_run['config'], depth_run['ckpt'], str(tmp_path)])
    with open(osp.join(out, 'transformer', 'config.json')) as f:
        assert json.load(f)['num_layers'] == 2
    with open(osp.join(out, 'model_index.json')) as f:
        assert json.load(f)['_class_name'] == 'DiTPipeline'
    result = str(tmp_path / 'plain.npz')
    env = dict(PATH='/usr/bin:/bin', OMP_NUM_THREADS='1', HOME=str(tmp_path),
               HF_HUB_OFFLINE='1')
    subprocess.run([sys.executable, '-c', PLAIN_DIFFUSERS, out, result], check=True,
                   env=env, cwd=str(tmp_path), timeout=300)
    plain = np.load(result)
    assert int(plain['num_layers']) == 2 and int(plain['blocks']) == 2
    model = depth_run['model']
    noise = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    expected = model.sample(model.student, noise, torch.tensor([2, 0]), num_inference_steps=2)
    expected = (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(plain['images'], expected, atol=1e-5)
