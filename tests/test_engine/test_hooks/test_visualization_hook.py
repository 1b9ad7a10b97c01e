"""DistillerVisualizationHook's options, on a stand-in distiller whose samples are its
noise: each option changes the grid, its noise or its name (the whole run is in
test_feedback_hooks.py)."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmagic.structures import DataSample
from mmengine.visualization import Visualizer
from torch import nn

from mmdiff_2ndm.engine.hooks import DistillerVisualizationHook
from mmdiff_2ndm.utils.image_grid import labelled_rows

SHAPE = (3, 2, 2)


@pytest.fixture(autouse=True, scope='module')
def visualizer():
    """MMagic's hook takes the current visualizer at construction."""
    return Visualizer.get_instance('test_visualization_hook_options')


class NoiseDistiller(nn.Module):
    """Samples = the noise mapped to [0, 255]; records every ``generate`` call."""
    text_encoder = None
    num_classes = None

    def __init__(self):
        super().__init__()
        self.teacher = nn.Identity()
        self.student_ema = nn.Identity()
        self.calls = []

    def noise_fn(self, noise=None, num_batches=1):
        return torch.randn(num_batches, *SHAPE)

    def generate(self, inputs):
        self.calls.append(inputs)
        images = (inputs['noise'].sigmoid() * 255).round()
        return [DataSample(fake_img=image) for image in images]


def test_seed_draws_the_fixed_noise():
    model = NoiseDistiller()
    hook = DistillerVisualizationHook(n_samples=2, seed=5)
    hook.sample_grid(model)
    torch.manual_seed(5)
    torch.testing.assert_close(hook._noise, torch.randn(2, *SHAPE))


def test_sample_models_and_steps_reach_generate():
    model = NoiseDistiller()
    samples = DistillerVisualizationHook(n_samples=2, sample_models=('teacher', 'orig'),
                                         num_inference_steps=3).sample_grid(model)
    assert [call['sample_model'] for call in model.calls] == ['teacher', 'orig']
    assert all(call['sample_kwargs'] == dict(num_inference_steps=3) for call in model.calls)
    assert sorted(samples[0].keys()) == ['orig_img', 'teacher_img']


def test_n_row_splits_each_models_row():
    """n_row=1 with 2 samples: two rows per model, the label on the first."""
    model = NoiseDistiller()
    hook = DistillerVisualizationHook(n_samples=2, n_row=1, sample_models=('orig', ))
    samples = hook.sample_grid(model)
    images = torch.stack([s.orig_img for s in samples]).flip(1)
    expected = labelled_rows([('student', images[:1]), ('', images[1:])], 'iteration 4')
    np.testing.assert_array_equal(hook.labelled_grid(samples, 4), expected)


def test_name_is_the_image_name_in_the_backends():
    added = []
    hook = DistillerVisualizationHook(n_samples=1, name='grid')
    hook._visualizer = SimpleNamespace(add_image=lambda name, image, step: added.append(
        (name, step)))
    hook.vis_sample(SimpleNamespace(model=NoiseDistiller()), batch_idx=6)
    assert added == [('grid', 7)]


def test_save_at_test_and_kwargs_reach_mmagics_hook():
    hook = DistillerVisualizationHook(save_at_test=True, max_save_at_test=7)
    assert hook.save_at_test is True and hook.max_save_at_test == 7
