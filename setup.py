"""Installs mmdiff-2ndm, an MMagic plugin for 2ndMatch finetuning of pruned diffusion models."""
import os.path as osp
import re

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name: str) -> list:
    """Returns the requirement lines of ``requirements/<name>``, comments dropped."""
    with open(osp.join(HERE, 'requirements', name), encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def read_version() -> str:
    """Returns ``__version__`` from ``mmdiff_2ndm/version.py`` without importing it."""
    with open(osp.join(HERE, 'mmdiff_2ndm', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


setup(
    name='mmdiff_2ndm',
    version=read_version(),
    description='2ndMatch finetuning of pruned diffusion models for MMagic/MMEngine',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    python_requires='>=3.8',
    # mmcv/mmengine/mmagic are installed by tools/setup_env.sh or `mim install` (OpenMMLab
    # convention): mmcv needs a build matching the user's torch.
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        mim=read_requirements('mminstall.txt'), tests=read_requirements('tests.txt')),
    license='Apache License 2.0',
    zip_safe=False,
)
