"""Fixtures shared across test folders: one thread for tiny models, a tiny CLIP, a tiny
CompVis LDM checkpoint. What they build lives in ``tests/helpers/``."""
import pytest
import torch

from helpers.clip import save_tiny_clip
from helpers.compvis_ldm import write_compvis_ldm


@pytest.fixture(scope='module')
def single_thread():
    """Runs a module's tiny models on one thread (restored after the module).

    On a busy 2-core machine, two OpenMP threads per op make a 12x12 U-Net forward ~100x
    slower; the models here are too small to gain from threads. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures('single_thread')``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def tiny_clip(tmp_path_factory) -> str:
    """Folder of a random tiny ``CLIPModel`` + tokenizer (hub CLIP folder layout)."""
    return save_tiny_clip(str(tmp_path_factory.mktemp('tiny_clip')))


@pytest.fixture(scope='session')
def compvis_ldm(tmp_path_factory) -> dict:
    """A tiny CompVis class-conditional LDM checkpoint and config, and its source models
    (see ``helpers.compvis_ldm.write_compvis_ldm``)."""
    return write_compvis_ldm(str(tmp_path_factory.mktemp('compvis_ldm')))
