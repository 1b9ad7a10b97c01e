"""Fixtures of the config tests: tiny stand-ins for every teacher, data set and the FID
network the configs name (built by ``helpers.config_assets``). Nothing is downloaded."""
import pytest

from helpers.config_assets import write_config_assets
from helpers.data_formats import pure_red, write_data_formats


@pytest.fixture(scope='module', autouse=True)
def one_thread_per_module(single_thread):
    """Every module here runs tiny models: one thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope='session')
def assets(tmp_path_factory, tiny_clip, compvis_ldm) -> dict:
    """Every tiny model folder, checkpoint and data set, built once per session.

    From tests/conftest.py: ``tiny_clip``, the CLIP model and tokenizer folder;
    ``compvis_ldm``, a CompVis LDM checkpoint.
    """
    return write_config_assets(tmp_path_factory.mktemp('config_assets'), tiny_clip,
                               compvis_ldm)


@pytest.fixture(scope='session')
def red_data(tmp_path_factory) -> dict:
    """A pure red image in every on-disk format the configs read (write_data_formats)."""
    return write_data_formats(str(tmp_path_factory.mktemp('red_data')), pure_red)
