"""Up-front check of the local paths a config names (mmdiff_2ndm.utils.config_paths)."""
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from mmdiff_2ndm.utils import check_local_paths, missing_local_paths

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _config(tmp_path, **changes) -> Config:
    present = tmp_path / 'present'
    (present / 'unet').mkdir(parents=True, exist_ok=True)
    (present / 'table.pth').write_bytes(b'')
    cfg = dict(
        model=dict(
            type='DiffusionDistiller',
            teacher=dict(type='UNet2DConditionModel', from_pretrained=str(present),
                         subfolder='unet'),
            vae=dict(type='VQModel', from_pretrained=str(tmp_path / 'no_vae')),
            class_embedder=dict(type='ClassEmbedder', checkpoint=str(present / 'table.pth')),
            teacher_ckpt=dict(filename=str(tmp_path / 'no.pth'), prefix='student.'),
            text_encoder=str(present)),
        train_dataloader=dict(dataset=dict(type='RepeatDataset', times=2, dataset=dict(
            type='BasicImageDataset', data_root=str(tmp_path / 'no_data')))),
        val_cfg=dict(type='MultiValLoop'),
        val_dataloader=dict(dataset=dict(type='BasicImageDataset', data_root=str(present),
                                         ann_file='keys.txt')),
        val_evaluator=dict(metrics=[dict(type='FID', inception_path=str(tmp_path / 'inc.pt')),
                                    dict(type='CLIPScore', clip_path=str(present))]),
        test_dataloader=dict(dataset=dict(type='CIFAR10', data_root='nowhere', download=True)),
        test_cfg=dict(type='MultiTestLoop'),
        test_evaluator=dict(metrics=[dict(type='FID', inception_path='s3://bucket/inc.pt')]))
    cfg.update(changes)
    return Config(cfg)


def test_every_missing_path_is_named_with_its_key(tmp_path):
    missing = missing_local_paths(_config(tmp_path))
    assert [(key, what) for key, _, what in missing] == [
        ('model.vae.from_pretrained', 'diffusers model folder'),
        ('model.teacher_ckpt', 'checkpoint file'),
        ('train_dataloader.dataset.dataset.data_root', 'data set folder'),
        ('val_dataloader.dataset.ann_file', 'annotation file'),
        ('val_evaluator.metrics[0].inception_path', 'TorchScript feature network'),
    ]
    assert missing[3][1] == osp.join(str(tmp_path / 'present'), 'keys.txt')
    # a self-downloading data set and remote paths are not local files
    assert missing_local_paths(_config(tmp_path), phases=('test',))[2:] == []
    # a switched-off validation loop is not checked
    keys = [k for k, _, _ in missing_local_paths(_config(tmp_path, val_cfg=None))]
    assert not any(k.startswith('val_') for k in keys)


def test_check_raises_one_message_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        check_local_paths(_config(tmp_path))
    message = str(err.value)
    assert 'model.vae.from_pretrained' in message and '--cfg-options KEY=/your/path' in message
    assert message.count('\n  ') == 5
    check_local_paths(Config(dict(model=dict(type='X'))))  # nothing named, nothing raised


def test_train_tool_names_missing_data_root_and_teacher(tmp_path):
    """`tools/train.py configs/2ndm_lsun.py --cfg-options ...` with the teacher given but no
    data: a message naming the data roots and the FID network, nothing else."""
    teacher = tmp_path / 'church'
    teacher.mkdir()
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         osp.join(REPO, 'configs', '2ndm_lsun.py'), '--work-dir', str(tmp_path / 'work'),
         '--cfg-options', f'model.teacher.from_pretrained={teacher}'],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'The config names local files that do not exist' in proc.stderr
    assert "train_dataloader.dataset.data_root = 'data/lsun/church_outdoor_train'" in proc.stderr
    assert 'val_evaluator.metrics[0].inception_path' in proc.stderr
    assert 'model.teacher' not in proc.stderr

    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'),
         osp.join(REPO, 'configs', '2ndm_lsun.py'), '--work-dir', str(tmp_path / 'work')],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
    assert "model.teacher.from_pretrained = 'checkpoints/ddpm-ema-church-256'" in proc.stderr
