"""mmdiff-2ndm: 2ndMatch finetuning of pruned diffusion models for MMagic/MMEngine.

Importing the package registers every component into MMagic's registries, installs the
safe local checkpoint loader (see :mod:`mmdiff_2ndm.utils.checkpoint`) and makes the
installed configs loadable as ``mmdiff_2ndm::<path>.py`` (see :mod:`mmdiff_2ndm.registry`).
"""
from .utils.warning_filters import known_import_warnings_ignored

# Third-party packages print known harmless deprecations while we import them (see
# utils/warning_filters.py); only those, and only during these imports, are silenced.
with known_import_warnings_ignored():
    # utils first: checkpoint loading must be safe before anything loads
    from . import utils  # noqa: F401
    from . import datasets, engine, evaluation, models, pruning  # noqa: F401  (registration)
    from . import registry  # noqa: F401  (the mmdiff_2ndm:: config scope)
    from .apis import load_student
from .version import __version__

__all__ = ['__version__', 'load_student']
