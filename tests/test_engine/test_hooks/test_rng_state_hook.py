"""RNGStateHook: torch RNG states saved per rank, restored only when resuming."""
from types import SimpleNamespace

import pytest
import torch

from mmdiff_2ndm.engine.hooks import RNGStateHook


def test_state_round_trip_on_resume_only():
    hook = RNGStateHook()
    torch.manual_seed(1)
    checkpoint = {}
    hook.before_save_checkpoint(None, checkpoint)
    expected = torch.rand(3)  # what the uninterrupted run draws next

    torch.manual_seed(2)
    hook.after_load_checkpoint(SimpleNamespace(_resume=False), checkpoint)  # load_from
    hook.before_train_iter(None, 0)
    assert not torch.equal(torch.rand(3), expected)
    hook.after_load_checkpoint(SimpleNamespace(_resume=True), checkpoint)
    torch.manual_seed(3)  # MMEngine may re-seed after loading; the restore comes later
    hook.before_train_iter(None, 0)
    assert torch.equal(torch.rand(3), expected)
    hook.before_train_iter(None, 1)  # once only
    assert not torch.equal(torch.rand(3), expected)


def test_missing_or_mismatched_states():
    resume = SimpleNamespace(_resume=True)
    RNGStateHook().after_load_checkpoint(resume, {'meta': {}})  # warns, goes on
    with pytest.raises(RuntimeError, match='no RNG states'):
        RNGStateHook(strict=True).after_load_checkpoint(resume, {'meta': {}})
    two_ranks = {'meta': {'torch_rng_states': [{'cpu': torch.get_rng_state()}] * 2}}
    with pytest.raises(RuntimeError, match='2 ranks, this run has 1'):
        RNGStateHook(strict=True).after_load_checkpoint(resume, two_ranks)
