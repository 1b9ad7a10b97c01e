"""The options TeacherFidelity and CLIPScore hand to MMagic's GenerativeMetric: its
sampler reads ``sample_model`` and ``sample_kwargs``, its evaluation ``prefix`` and
``collect_device``."""
import pytest

import mmdiff_2ndm  # noqa: F401  (registers the metrics)
from mmagic.registry import METRICS

OPTIONS = dict(sample_model='orig', sample_kwargs=dict(num_inference_steps=3),
               collect_device='gpu', prefix='mine')


@pytest.mark.parametrize('metric', ['TeacherFidelity', 'CLIPScore'])
def test_options_reach_mmagics_generative_metric(metric, tiny_clip):
    extra = dict(clip_path=tiny_clip) if metric == 'CLIPScore' else {}
    built = METRICS.build(dict(type=metric, fake_nums=3, **OPTIONS, **extra))
    assert built.fake_nums == 3
    assert built.sample_model == 'orig' and built.prefix == 'mine'
    assert built.collect_device == 'gpu'
    assert built.sample_kwargs['num_inference_steps'] == 3
    if metric == 'CLIPScore':
        assert built.clip_path == tiny_clip
