"""Progress bars and messages of a study on stdout.

Bars show only where stdout is a terminal (tqdm's ``disable=None``) and vanish when done,
so that logs hold the ``[study]`` lines alone.
"""
import sys
from typing import Iterable, Optional

from tqdm import tqdm


def progress(iterable: Optional[Iterable] = None, desc: str = '', **kwargs) -> tqdm:
    """A tqdm bar on stdout, off unless stdout is a terminal.

    Args:
        iterable (Iterable, optional): What to iterate over; None for a bar updated by
            hand. Defaults to None.
        desc (str): The bar's label. Defaults to ''.
        **kwargs: Further ``tqdm`` arguments (``total``, ``unit``).
    """
    return tqdm(iterable, desc=desc, file=sys.stdout, disable=None, leave=False,
                dynamic_ncols=True, **kwargs)


def say(message: str) -> None:
    """Prints a line of the study's log above any open bar."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
