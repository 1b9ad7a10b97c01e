"""tools/benchmark_gpu.py: its cases follow the configs, its layouts are the published sizes,
and its tiny preset runs every section without MMagic (as on the GPU image)."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'benchmark_gpu.py')


def _tool():
    spec = importlib.util.spec_from_file_location('benchmark_gpu', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pruning_hook(cfg) -> dict:
    hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'DiffusionPruningHook']
    assert len(hooks) <= 1
    return hooks[0] if hooks else None


@pytest.mark.parametrize('name', sorted(_tool().CASES))
def test_case_follows_its_config(name):
    """Batch, pruning and 2ndM settings of each benchmark case are its config's."""
    tool = _tool()
    case = tool.CASES[name]
    cfg = Config.fromfile(osp.join(REPO, case['config']))
    assert cfg.train_dataloader.batch_size == case['batch']
    jacobian = cfg.model.losses.jacobian
    assert {k: jacobian[k] for k in tool.JACOBIAN} == tool.JACOBIAN
    # nothing else that changes the term's cost (batch fraction, more projections)
    assert set(jacobian) - set(tool.JACOBIAN) <= {'type', 'scale'}
    hook = _pruning_hook(cfg)
    if 'bk_sdm' in case:
        assert hook is None and cfg.model.student.type == 'BKSDMStudent'
        assert cfg.model.student.variant == case['bk_sdm']
    elif 'depth' in case:
        assert hook['method'] == 'depth'
        assert {k: hook['depth_cfg'][k] for k in case['depth']} == case['depth']
    else:
        assert hook.get('method', 'width') == 'width'
        prune = dict(ratio=hook['ratio'])
        if 'groupnorm_ratio' in hook.get('prune_cfg', {}):
            prune['groupnorm_ratio'] = hook['prune_cfg']['groupnorm_ratio']
        assert prune == case['prune']


@pytest.mark.parametrize('layout, model, millions', [
    ('DDPM_CIFAR10_32', 'UNet2DModel', 35.7), ('DDPM_LSUN_256', 'UNet2DModel', 113.7),
    ('LDM4_CIN256', 'UNet2DConditionModel', 400.9),
    ('DIT_XL_2_256', 'DiTTransformer2DModel', 749.8),
    ('SD_V1_UNET', 'UNet2DConditionModel', 859.5)])
def test_layouts_have_the_published_size(layout, model, millions):
    import diffusers

    from mmdiff_2ndm.models import layouts
    with torch.device('meta'):
        net = getattr(diffusers, model)(**getattr(layouts, layout))
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(millions, abs=0.05)


# Run as on the GPU image: importing MMagic, MMCV or MMEngine fails.
_WITHOUT_MMAGIC = """
import runpy, sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('mmagic', 'mmcv', 'mmengine'):
            raise ImportError('not on the GPU image: ' + name)
sys.meta_path.insert(0, Blocked())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def test_tiny_run_without_mmagic(tmp_path):
    out = str(tmp_path / 'gpu.json')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(
        [sys.executable, '-c', _WITHOUT_MMAGIC, TOOL, '--preset', 'tiny', '--light-imports',
         '--device', 'cpu', '--sections', 'loss', 'layouts', 'sampling', '--cases',
         'lsun', 'dit_xl2_d14', 'sd_bk_sdm_base', '--out', out],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out, encoding='utf-8') as f:
        results = json.load(f)
    loss = results['loss']
    # every lever of the plan has its row; each measured or its failure recorded
    assert len(loss) == 13
    for row in loss:
        measured = 'seconds' in row or 'term_fp32' in row
        assert measured != ('error' in row), row
    plain = [r for r in loss if set(r) == {'variant', 'batch', 'seconds', 'peak_bytes'}]
    assert {r['variant'] for r in plain} == {'dsm_kd', 'jvp'}
    precision = next(r for r in loss if r['variant'].startswith('jacobian term'))
    assert precision['term_fp32'] > 0 and precision['relative_difference'] >= 0
    layouts = {(r['case'], r['variant']): r for r in results['layouts']}
    assert set(layouts) == {(c, v) for c in ('lsun', 'dit_xl2_d14', 'sd_bk_sdm_base')
                            for v in ('dsm_kd', 'jvp')}
    for row in layouts.values():
        assert row['seconds'] > 0 and row['batch'] == 2
        # each student is smaller than its teacher: the pruning did happen
        assert row['student_params'] < row['teacher_params']
    sampling = results['sampling']
    assert [(r['case'], r['batch']) for r in sampling] == [
        (c, b) for c in ('lsun', 'dit_xl2_d14', 'sd_bk_sdm_base') for b in (1, 2)]
    for row in sampling:
        assert row['student_params'] < row['teacher_params'] and row['speedup'] > 0
