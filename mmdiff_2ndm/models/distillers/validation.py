"""Checks of the distiller's arguments, each raising ValueError that names the bad value."""
from typing import Any, Optional, Sequence

from torch import Tensor


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Returns ``value`` if it is one of ``choices``.

    Raises:
        ValueError: Otherwise.
    """
    if value not in choices:
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}.')
    return value


def check_int(name: str, value: Any, minimum: int, hint: str = '',
              optional: bool = False) -> Optional[int]:
    """Returns ``value`` if it is an int (not a bool) >= ``minimum`` (or None when
    ``optional``).

    Args:
        name (str): The argument's name, for the message.
        value: The value to check.
        minimum (int): The smallest allowed value.
        hint (str): Appended to the ``>= minimum`` of the message, e.g. its meaning.
        optional (bool): Whether None is allowed. Defaults to False.

    Raises:
        ValueError: Otherwise.
    """
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        prefix = 'None or an int' if optional else 'an int'
        raise ValueError(f'{name} must be {prefix} >= {minimum}{hint}, got {value!r}.')
    return value


def check_at_least(name: str, value: Any, minimum: int) -> int:
    """Returns ``int(value)`` if it is >= ``minimum`` (numbers that convert are taken).

    Raises:
        ValueError: Otherwise.
    """
    if int(value) < minimum:
        raise ValueError(f'{name} must be >= {minimum}, got {value!r}.')
    return int(value)


def check_probability(name: str, value: Any) -> float:
    """Returns ``float(value)`` if it is in [0, 1).

    Raises:
        ValueError: Otherwise.
    """
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f'{name} must be in [0, 1), got {value!r}.')
    return float(value)


def check_output_shape(output: Tensor, x_t: Tensor, role: str) -> None:
    """Raises ValueError when a denoiser's output does not have its input's shape."""
    if output.shape != x_t.shape:
        raise ValueError(
            f'The {role} output has shape {tuple(output.shape)} but the noisy input has '
            f'{tuple(x_t.shape)}; teacher and student must both predict a tensor of the '
            'input shape (same in/out channels and sample size).')
