"""`import mmdiff_2ndm` prints none of the known third-party import warnings, while ours, new
ones and the same warnings raised after the import still show."""
import os
import subprocess
import sys

from mmdiff_2ndm.utils.warning_filters import KNOWN_IMPORT_WARNINGS

SCRIPT = r'''
import sys, warnings
import mmdiff_2ndm
print('--- imported ---', file=sys.stderr, flush=True)
# raised after the import: shown again
warnings.warn_explicit('`torch.jit.script` is deprecated. Please switch', FutureWarning,
                       'torch/jit/_script.py', 1, module='torch.jit._script')
# another message from a filtered module: shown
warnings.warn_explicit('`SomethingNew` is deprecated', FutureWarning,
                       'diffusers/models/unet_2d_condition.py', 1,
                       module='diffusers.models.unet_2d_condition')
warnings.warn('a warning of ours', UserWarning)
'''


def test_import_is_quiet_and_later_warnings_show(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS='default', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-c', SCRIPT], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    before, marker, after = result.stderr.partition('--- imported ---')
    assert marker, result.stderr
    assert 'Warning' not in before, before  # -W default shows Deprecation/FutureWarnings
    assert after.count('FutureWarning') == 2, after
    assert '`torch.jit.script` is deprecated' in after and '`SomethingNew`' in after
    assert 'UserWarning: a warning of ours' in after


def test_filters_name_exact_modules():
    """Each filter names one warning category, one whole module and a message start."""
    for category, module, message in KNOWN_IMPORT_WARNINGS:
        assert category in (FutureWarning, DeprecationWarning)
        assert module.endswith('$') and '.*' not in module and message[0] != '.'
