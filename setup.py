"""Installs mmdiff-2ndm, an MMagic plugin for 2ndMatch finetuning of pruned diffusion models."""
import os
import os.path as osp
import re
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
# Shipped inside the package the OpenMMLab way (mmagic/mmdet: <package>/.mim/), so that an
# installed plugin's configs resolve as `mmdiff_2ndm::<path>.py` and `mim` finds the tools.
MIM_FILES = ('configs', 'tools')


def read_requirements(name: str) -> list:
    """Returns the requirement lines of ``requirements/<name>``, comments dropped."""
    with open(osp.join(HERE, 'requirements', name), encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def read_version() -> str:
    """Returns ``__version__`` from ``mmdiff_2ndm/version.py`` without importing it."""
    with open(osp.join(HERE, 'mmdiff_2ndm', 'version.py'), encoding='utf-8') as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def add_mim_extension() -> None:
    """Copies ``configs/`` (with its ``metafile.yml`` files), ``tools/`` and
    ``model-index.yml`` into ``mmdiff_2ndm/.mim/`` for sdists and wheels; an editable
    install reads them from the checkout (use relative ``_base_`` paths there)."""
    if not any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build', 'install')):
        return
    mim_path = osp.join(HERE, 'mmdiff_2ndm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(HERE, name), osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    # `mim search` lists the configs from it; MMEngine looks a `mmdiff_2ndm::` path up in
    # it and falls back to .mim/configs/<path> (the metafiles name no weights).
    shutil.copy(osp.join(HERE, 'model-index.yml'), osp.join(mim_path, 'model-index.yml'))


add_mim_extension()
setup(
    name='mmdiff_2ndm',
    version=read_version(),
    description='2ndMatch finetuning of pruned diffusion models for MMagic/MMEngine',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks')),
    include_package_data=True,
    package_data={'mmdiff_2ndm': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                                  '.mim/configs/**/*.md', '.mim/configs/**/*.yml',
                                  '.mim/tools/*.py', '.mim/tools/*.sh']},
    python_requires='>=3.8',
    # mmcv/mmengine/mmagic are installed by tools/setup_env.sh or `mim install` (OpenMMLab
    # convention): mmcv needs a build matching the user's torch.
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        mim=read_requirements('mminstall.txt'), tests=read_requirements('tests.txt')),
    license='Apache License 2.0',
    zip_safe=False,
)
