"""A tiny stand-in for the StyleGAN TorchScript Inception that MMagic's FID loads."""
import torch
from torch import Tensor, nn


class TinyFeatureNet(nn.Module):
    """Stand-in for the StyleGAN TorchScript Inception: 4 pooled random conv features.

    Called as ``inception(img_uint8, return_features=True)``; 4 features keep FID's
    covariance full rank with a handful of images.
    """

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        x = x.float() / 127.5 - 1.0
        return torch.tanh(self.conv(x)).mean(dim=(2, 3))
