"""Records named intermediate outputs of a denoiser during forwards that run anyway."""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from .denoisers import unwrap_denoiser


def _first_tensor(output) -> Tensor:
    """The hidden states of a module output: a tensor, the first of a tuple (U-Net down
    blocks return ``(hidden_states, res_samples)``), or a diffusers output's ``sample``."""
    if torch.is_tensor(output):
        return output
    if isinstance(output, (tuple, list)) and output and torch.is_tensor(output[0]):
        return output[0]
    sample = getattr(output, 'sample', None)
    if torch.is_tensor(sample):
        return sample
    raise TypeError(f'Cannot record a feature from a {type(output).__name__} output.')


class FeatureRecorder:
    """Forward hooks that keep the outputs of named modules, batch rows tracked.

    Used as a context manager around one iteration's forwards: hooks exist only inside
    it. A forward may run any rows of the batch (the Jacobian pass runs a sub-batch,
    repeated per projection, and the rest runs after it): wrap each call in
    :meth:`rows` with its ``batch_index`` and :meth:`features` puts every row back in
    batch order, taking the first recording of each row. Dual tensors of a forward-mode
    pass are recorded as their primal (with the reverse-mode graph, if any).

    Args:
        net (nn.Module): The denoiser (wrappers are stripped for the names).
        names (Sequence[str]): Module names of the bare net.
        detach (bool): Record detached tensors (the frozen teacher). Defaults to False.
    """

    def __init__(self, net: nn.Module, names: Sequence[str], detach: bool = False) -> None:
        bare = unwrap_denoiser(net)
        self.names = list(dict.fromkeys(names))
        self.modules = {name: bare.get_submodule(name) for name in self.names}
        self.detach = detach
        self._handles: List = []
        self._chunks: Dict[str, List[Tuple[Optional[Tensor], Tensor]]] = {}
        self._rows: Optional[Tensor] = None

    def __enter__(self) -> 'FeatureRecorder':
        self._chunks = {name: [] for name in self.names}
        self._handles = [module.register_forward_hook(self._hook(name))
                         for name, module in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:
            feature = _first_tensor(output)
            feature = fwAD.unpack_dual(feature).primal
            if self.detach:
                feature = feature.detach()
            self._chunks[name].append((self._rows, feature))
        return hook

    @contextlib.contextmanager
    def rows(self, batch_index: Optional[Tensor]) -> Iterator[None]:
        """Forwards inside run the batch rows ``batch_index`` (None: the whole batch)."""
        previous, self._rows = self._rows, batch_index
        try:
            yield
        finally:
            self._rows = previous

    def features(self, batch: int) -> Dict[str, Tensor]:
        """Every recorded feature (B, ...) in batch order.

        Args:
            batch (int): B, the batch size of the iteration.

        Returns:
            dict: Module name -> feature.

        Raises:
            RuntimeError: If a module did not run, or a row was never recorded.
        """
        out = {}
        for name, chunks in self._chunks.items():
            if not chunks:
                raise RuntimeError(f'Module {name!r} did not run in the forward; it cannot be '
                                   'a feature point (is it skipped by this config?).')
            device = chunks[0][1].device
            rows = torch.cat([torch.arange(batch, device=device) if r is None
                              else r.to(device) for r, _ in chunks])
            values = torch.cat([f for _, f in chunks])
            order = torch.arange(rows.numel(), device=device)
            if rows.numel() == batch and torch.equal(rows, order):  # one full-batch call
                out[name] = values
                continue
            first = torch.full((batch,), rows.numel(), dtype=torch.long, device=device)
            first = first.scatter_reduce(0, rows, order, reduce='amin')
            if bool((first == rows.numel()).any()):
                raise RuntimeError(f'Rows of the batch were not recorded at {name!r}.')
            out[name] = values[first]
        return out
