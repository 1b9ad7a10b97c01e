"""The proxy-FID feature network has the call MMagic's FID makes on Inception."""
import numpy as np
import torch

from mmdiff_2ndm.studies.digits.feature_net import DigitFeatureNet


def test_feature_net_signature():
    # the TorchScript feature net has the StyleGAN-Inception call MMagic's FID makes
    net = torch.jit.script(DigitFeatureNet().eval())
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert net(images, return_features=True).shape == (4, 32)
    assert net(images).shape == (4, 10)
    assert np.isfinite(net(images, return_features=True).detach().numpy()).all()
