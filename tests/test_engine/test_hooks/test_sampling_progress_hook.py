"""SamplingProgressHook: ``enabled`` decides whether a bar opens."""
from types import SimpleNamespace

import pytest

from mmdiff_2ndm.engine.hooks import SamplingProgressHook


@pytest.mark.parametrize('enabled', [True, False])
def test_enabled_opens_the_bar(enabled):
    hook = SamplingProgressHook(enabled=enabled)
    runner = SimpleNamespace(test_loop=SimpleNamespace(_total_length=3))
    hook._before_iter(runner, 0, mode='test')
    hook._after_iter(runner, 0, mode='test')
    assert (hook._bar is not None) == enabled
    if enabled:
        assert hook._bar.total == 3 and hook._bar.n == 1
    hook._after_epoch(runner, mode='test')
    assert hook._bar is None
