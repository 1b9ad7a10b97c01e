"""TeacherFidelity on hand-made sample pairs."""
import math

import numpy as np
import pytest
import torch

import mmdiff_2ndm.evaluation  # noqa: F401  (registers TeacherFidelity)
from mmagic.registry import METRICS


def _pairs(noise_std: float, num: int = 4, seed: int = 0) -> list:
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.rand(num, 3, 16, 16, generator=gen) * 255
    student = (teacher + noise_std * torch.randn(teacher.shape, generator=gen)).clamp(0, 255)
    return [dict(fake_img=s, teacher_img=t) for s, t in zip(student, teacher)]


def _score(pairs: list, fake_nums: int) -> dict:
    metric = METRICS.build(dict(type='TeacherFidelity', fake_nums=fake_nums))
    metric.process(None, pairs[:2])
    metric.process(None, pairs[2:])
    return metric.compute_metrics(metric.fake_results)


def test_identical_samples_score_perfectly():
    pairs = [dict(fake_img=p['teacher_img'].clone(), teacher_img=p['teacher_img'])
             for p in _pairs(0.0)]
    scores = _score(pairs, 4)
    assert scores['ssim'] == pytest.approx(1.0)
    assert scores['mse'] == 0.0 and math.isinf(scores['psnr'])


def test_more_noise_means_lower_fidelity():
    close, far = _score(_pairs(5.0), 4), _score(_pairs(40.0), 4)
    assert far['ssim'] < close['ssim'] < 1.0
    assert far['psnr'] < close['psnr']
    assert close['mse'] < far['mse']


@pytest.mark.parametrize('noise_std', [5.0, 40.0])
def test_scores_equal_scikit_image(noise_std):
    """SSIM and PSNR per pair as scikit-image computes them (Wang et al.'s Gaussian SSIM:
    11x11 window, sigma 1.5, population covariances, per channel; data range 255),
    averaged over the pairs; MSE on the [0, 1] scale."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    pairs = _pairs(noise_std)
    scores = _score(pairs, 4)
    ssim, psnr, mse = [], [], []
    for pair in pairs:
        student = pair['fake_img'].double().numpy()
        teacher = pair['teacher_img'].double().numpy()
        ssim.append(structural_similarity(
            student, teacher, channel_axis=0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=255))
        psnr.append(peak_signal_noise_ratio(teacher, student, data_range=255))
        mse.append(np.mean((student / 255 - teacher / 255)**2))
    assert scores['ssim'] == pytest.approx(np.mean(ssim), rel=1e-6)
    assert scores['psnr'] == pytest.approx(np.mean(psnr), rel=1e-6)
    assert scores['mse'] == pytest.approx(np.mean(mse), rel=1e-6)


def test_stops_at_fake_nums_and_asks_model_for_teacher_samples():
    metric = METRICS.build(dict(type='TeacherFidelity', fake_nums=3))
    metric.process(None, _pairs(5.0))
    assert len(metric.fake_results) == 3
    assert metric.sample_kwargs['with_teacher'] is True
    with pytest.raises(KeyError, match='teacher_img'):
        METRICS.build(dict(type='TeacherFidelity', fake_nums=2)).process(
            None, [dict(fake_img=torch.zeros(3, 16, 16))])
    with pytest.raises(ValueError, match='at least 11x11'):
        METRICS.build(dict(type='TeacherFidelity', fake_nums=2)).process(
            None, [dict(fake_img=torch.zeros(3, 8, 8), teacher_img=torch.zeros(3, 8, 8))])
