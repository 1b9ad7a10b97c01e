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


def test_feature_net_of_the_patches(tmp_path, single_thread):
    """The patches' feature network tells the ten pictures apart on held-out patches (well
    above the 10 % of chance), keeps its own files and records its data set."""
    import json

    from mmdiff_2ndm.studies.digits.feature_net import load_images, prepare_feature_net
    path = prepare_feature_net(str(tmp_path), iters=100, dataset='patches')
    assert path.endswith('feature_net_patches.pt')
    with open(tmp_path / 'feature_net_patches.json') as f:
        record = json.load(f)
    assert record['dataset'] == 'patches' and record['test_accuracy'] > 0.5
    images, labels = load_images(16, 'test', 'patches')
    net = torch.jit.load(path)
    assert net(images[:4]).shape == (4, 10)
    accuracy = (net(images).argmax(1) == labels).float().mean().item()
    assert accuracy == record['test_accuracy']
