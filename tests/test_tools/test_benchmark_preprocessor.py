"""tools/benchmark_preprocessor.py: times both preprocessors alone and in training
iterations of a config, and writes their ratios."""
import json
import os.path as osp
import subprocess
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_benchmark_times_both_preprocessors(tmp_path):
    """A tiny run on the digits DSM+KD config: every block timed, ratios of the medians."""
    out = tmp_path / 'preprocessor.json'
    subprocess.run([sys.executable, osp.join(REPO, 'tools', 'benchmark_preprocessor.py'),
                    'configs/digits/2ndm_digits16_dsm_kd.py', '--batch', '4', '--rounds', '2',
                    '--block', '1', '--threads', '1', '--out', str(out)],
                   cwd=REPO, check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.read_text())
    names = ['DataPreprocessor', 'DiffusionDataPreprocessor']
    for section in ('preprocessor_alone', 'train_iteration'):
        assert sorted(result[section]) == names
        for name in names:
            assert len(result[section][name]['blocks']) == 2
            assert result[section][name]['median'] > 0
    for section, ratio_key in (('train_iteration', 'ratio_iteration'),
                               ('preprocessor_alone', 'ratio_alone')):
        ratio = result[section][names[1]]['median'] / result[section][names[0]]['median']
        assert abs(result[ratio_key] - ratio) < 1e-12
    assert result['batch'] == 4 and result['threads'] == 1
    assert result['config'] == 'configs/digits/2ndm_digits16_dsm_kd.py' and result['ckpt'] is None
