"""tools/prune.py: one-shot pruning of a config's student into a loadable checkpoint."""
import json
import os.path as osp
import runpy
import sys

import torch
from diffusers import DiTTransformer2DModel, UNet2DModel
from mmengine.model import BaseModel

import mmdiff_2ndm  # noqa: F401  (safe checkpoint loader)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.denoisers import example_denoiser_inputs, run_denoiser
from mmdiff_2ndm.pruning import rebuild_pruned
from mmdiff_2ndm.utils import safe_torch_load

TOOL = osp.join(osp.dirname(__file__), '..', '..', 'tools', 'prune.py')
UNET_CFG = dict(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                block_out_channels=(32, 64), norm_num_groups=8,
                down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
                up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=16)


@MODELS.register_module(name='PruneToolToyModel', force=True)
class PruneToolToyModel(BaseModel):
    """A dense teacher and its student copy."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = UNet2DModel(**UNET_CFG)
        self.student = UNet2DModel(**UNET_CFG)
        self.student.load_state_dict(self.teacher.state_dict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError('only built and pruned here')


def test_prune_tool_writes_rebuildable_checkpoint(tmp_path, monkeypatch):
    config = tmp_path / 'cfg.py'
    config.write_text(
        "default_scope = 'mmagic'\n"
        "model = dict(type='PruneToolToyModel')\n"
        "custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.3, importance='magnitude')]\n")
    out = tmp_path / 'pruned.pth'
    monkeypatch.setattr(sys, 'argv', [TOOL, str(config), '--ratio', '0.5', '--out', str(out),
                                      '--cfg-options', f'work_dir={tmp_path}'])
    runpy.run_path(TOOL, run_name='__main__')

    ckpt = safe_torch_load(str(out), map_location='cpu')
    record = ckpt['meta']['pruning']
    assert record['settings']['ratio'] == 0.5  # the command line wins over the config
    assert record['stats']['params_after'] < 0.5 * record['stats']['params_before']
    # Rebuild a dense student from the record and load the saved weights exactly.
    model = PruneToolToyModel()
    rebuild_pruned(model.student, record)
    model.load_state_dict(ckpt['state_dict'], strict=True)
    assert osp.isfile(tmp_path / 'pruning_summary.json')
    inputs = example_denoiser_inputs(model.student)
    with torch.no_grad():
        assert run_denoiser(model.student, **inputs).shape == (1, 3, 8, 8)


DIT_CFG = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
               num_layers=4, sample_size=8, patch_size=2, num_embeds_ada_norm=10)


@MODELS.register_module(name='PruneToolDiTModel', force=True)
class PruneToolDiTModel(BaseModel):
    """A dense DiT teacher, its student copy and the student DSM loss of a data batch."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = DiTTransformer2DModel(**DIT_CFG)
        self.student = DiTTransformer2DModel(**DIT_CFG)
        self.student.load_state_dict(self.teacher.state_dict())

    def pruning_loss(self, data_batch, timesteps):
        """The DSM loss on the digits (3 x 8 x 8 uint8) padded to the DiT's 4 channels."""
        images = torch.stack(list(data_batch['inputs'])).float() / 127.5 - 1
        latents = torch.cat([images, images[:, :1]], dim=1)
        labels = torch.zeros(latents.shape[0], dtype=torch.long)
        noise = torch.randn_like(latents)
        return ((run_denoiser(self.student, latents + noise, timesteps, labels) - noise) ** 2
                ).mean()

    def forward(self, *args, **kwargs):
        raise NotImplementedError('only built and pruned here')


def test_prune_tool_prunes_dit_depth_on_the_config_data(tmp_path, monkeypatch):
    config = tmp_path / 'cfg.py'
    config.write_text(
        "default_scope = 'mmagic'\n"
        "model = dict(type='PruneToolDiTModel')\n"
        "train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler',"
        " shuffle=False), dataset=dict(type='SklearnDigits', image_size=8, split='train',"
        " pipeline=[dict(type='PackInputs', keys=['gt'])]))\n"
        "custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.3, importance='magnitude')]\n")
    out = tmp_path / 'pruned.pth'
    monkeypatch.setattr(sys, 'argv', [
        TOOL, str(config), '--method', 'depth', '--keep', '1', '--group-size', '2',
        '--selector', 'cosine', '--out', str(out), '--cfg-options', f'work_dir={tmp_path}'])
    runpy.run_path(TOOL, run_name='__main__')

    ckpt = safe_torch_load(str(out), map_location='cpu')
    record = ckpt['meta']['pruning']
    assert record['settings']['method'] == 'depth' and record['history'] == []
    assert len(record['depth']['kept']) == 2 and record['depth']['num_blocks'] == 4
    model = PruneToolDiTModel()
    rebuild_pruned(model.student, record)
    model.load_state_dict(ckpt['state_dict'], strict=True)
    assert len(model.student.transformer_blocks) == 2
    with open(tmp_path / 'pruning_summary.json') as f:
        assert json.load(f)['depth'] == record['depth']
