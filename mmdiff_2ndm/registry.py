"""The ``mmdiff_2ndm`` scope: what makes ``_base_ = ['mmdiff_2ndm::<path>.py']`` work.

Components register into MMagic's registries (``from mmagic.registry import MODELS``).
A config that inherits ``mmdiff_2ndm::digits/2ndm_digits16.py`` from the installed package
needs two things from MMEngine:

* the package in ``mmengine.config.utils.MODULE2PACKAGE`` (which MMEngine hard-codes for
  OpenMMLab's own packages), to find ``<site-packages>/mmdiff_2ndm/.mim/configs/``;
* a registry of scope ``mmdiff_2ndm`` below each MMagic registry: MMEngine marks every
  ``type`` dict of such a base with ``_scope_='mmdiff_2ndm'`` and builds it from
  ``mmdiff_2ndm.registry``. The registries below are MMagic's children with no entries
  of their own, so every lookup falls through to MMagic (and on to MMEngine).

Importing ``mmdiff_2ndm`` does both, so load a user config after the import (the tools
do; in a script, ``import mmdiff_2ndm`` before ``Config.fromfile``).
"""
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import Registry

from mmagic import registry as _mmagic

PACKAGE = 'mmdiff_2ndm'
MODULE2PACKAGE.setdefault(PACKAGE, PACKAGE)


def _child(parent: Registry) -> Registry:
    """An empty registry of scope ``mmdiff_2ndm`` below ``parent``; it imports the parent's
    modules on first use, as the parent would."""
    return Registry(parent.name, parent=parent, scope=PACKAGE,
                    locations=list(parent._locations) + [PACKAGE])


RUNNERS = _child(_mmagic.RUNNERS)
RUNNER_CONSTRUCTORS = _child(_mmagic.RUNNER_CONSTRUCTORS)
LOOPS = _child(_mmagic.LOOPS)
HOOKS = _child(_mmagic.HOOKS)
LOG_PROCESSORS = _child(_mmagic.LOG_PROCESSORS)
OPTIMIZERS = _child(_mmagic.OPTIMIZERS)
OPTIM_WRAPPERS = _child(_mmagic.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(_mmagic.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(_mmagic.PARAM_SCHEDULERS)
DATASETS = _child(_mmagic.DATASETS)
DATA_SAMPLERS = _child(_mmagic.DATA_SAMPLERS)
TRANSFORMS = _child(_mmagic.TRANSFORMS)
MODELS = _child(_mmagic.MODELS)
MODEL_WRAPPERS = _child(_mmagic.MODEL_WRAPPERS)
WEIGHT_INITIALIZERS = _child(_mmagic.WEIGHT_INITIALIZERS)
TASK_UTILS = _child(_mmagic.TASK_UTILS)
DIFFUSION_SCHEDULERS = _child(_mmagic.DIFFUSION_SCHEDULERS)
METRICS = _child(_mmagic.METRICS)
EVALUATORS = _child(_mmagic.EVALUATORS)
VISUALIZERS = _child(_mmagic.VISUALIZERS)
VISBACKENDS = _child(_mmagic.VISBACKENDS)

__all__ = [
    'RUNNERS', 'RUNNER_CONSTRUCTORS', 'LOOPS', 'HOOKS', 'LOG_PROCESSORS', 'OPTIMIZERS',
    'OPTIM_WRAPPERS', 'OPTIM_WRAPPER_CONSTRUCTORS', 'PARAM_SCHEDULERS', 'DATASETS',
    'DATA_SAMPLERS', 'TRANSFORMS', 'MODELS', 'MODEL_WRAPPERS', 'WEIGHT_INITIALIZERS',
    'TASK_UTILS', 'DIFFUSION_SCHEDULERS', 'METRICS', 'EVALUATORS', 'VISUALIZERS',
    'VISBACKENDS'
]
