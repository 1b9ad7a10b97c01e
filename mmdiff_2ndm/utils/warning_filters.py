"""Known harmless warnings that third-party packages print while the plugin imports them.

MMagic 1.2.0 imports diffusers modules by their pre-0.29 paths and transformers compiles
a TorchScript helper at import time: every process printed five FutureWarnings (ten
lines) before anything of ours. They are ignored only while ``mmdiff_2ndm`` imports its
dependencies, each by its exact category, emitting module and message: the same warnings
raised later (by user code calling ``torch.jit.script``, say), any other warning, and all
of ours still show.
"""
import contextlib
import warnings
from typing import Iterator, Tuple, Type

# (category, module that warns (regex, whole name), message (regex, from its start))
KNOWN_IMPORT_WARNINGS: Tuple[Tuple[Type[Warning], str, str], ...] = (
    # mmagic imports diffusers' deprecated module aliases (diffusers 0.28.2)
    (FutureWarning, r'diffusers\.models\.transformers\.transformer_2d$',
     r'`Transformer2DModelOutput` is deprecated'),
    (FutureWarning, r'diffusers\.models\.dual_transformer_2d$',
     r'`DualTransformer2DModel` is deprecated'),
    (FutureWarning, r'diffusers\.models\.unet_2d_condition$',
     r'`UNet2DConditionOutput` is deprecated'),
    (FutureWarning, r'diffusers\.models\.unet_2d_condition$',
     r'`UNet2DConditionModel` is deprecated'),
    # transformers' modeling_vits scripts a helper at import (torch >= 2.10 deprecation)
    (FutureWarning, r'torch\.jit\._script$', r'`torch\.jit\.script` is deprecated'),
    # mmagic's trans_utils reads np.bool8 at import (hidden by default, shown by -W default)
    (DeprecationWarning, r'mmagic\.utils\.trans_utils$', r'`np\.bool8` is a deprecated alias'),
)


@contextlib.contextmanager
def known_import_warnings_ignored() -> Iterator[None]:
    """Ignores :data:`KNOWN_IMPORT_WARNINGS` inside the block; the filters are restored
    on exit."""
    with warnings.catch_warnings():
        for category, module, message in KNOWN_IMPORT_WARNINGS:
            warnings.filterwarnings('ignore', message=message, category=category,
                                    module=module)
        yield
