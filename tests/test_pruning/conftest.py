"""Fixtures of the pruning tests: builders of tiny and published-layout denoisers
(``helpers.denoisers``, random weights)."""
import pytest

from helpers.denoisers import cifar10_ddpm, dit, sd_unet, tiny_unet


@pytest.fixture
def make_unet():
    """tiny_unet(**kwargs): a 2-level UNet2DModel with attention."""
    return tiny_unet


@pytest.fixture
def make_dit():
    """dit(num_layers, heads, head_dim): a DiT in the diffusers layout."""
    return dit


@pytest.fixture
def make_sd_unet():
    """sd_unet(): the SD-1.x UNet layout at reduced depth."""
    return sd_unet


@pytest.fixture(scope='session')
def make_cifar10_ddpm():
    """cifar10_ddpm(): the google/ddpm-cifar10-32 architecture."""
    return cifar10_ddpm
