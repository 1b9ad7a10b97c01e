"""prepare_cpu_distributed: what tools/train.py and tools/test.py do for CPU launchers."""
import pytest
from mmengine.config import Config

import mmdiff_2ndm  # noqa: F401  (mmagic registries, as in the tools)
from mmdiff_2ndm.utils import prepare_cpu_distributed


def _cfg(**kwargs) -> Config:
    return Config(dict(launcher='pytorch', **kwargs))


def test_nccl_on_cpu_names_the_fix():
    with pytest.raises(ValueError, match=r'env_cfg.dist_cfg.backend=gloo'):
        prepare_cpu_distributed(_cfg(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    with pytest.raises(ValueError, match='gloo'):  # mmengine's default backend is nccl
        prepare_cpu_distributed(_cfg())


def test_no_launcher_changes_nothing():
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    prepare_cpu_distributed(cfg)
    assert 'model_wrapper_cfg' not in cfg
