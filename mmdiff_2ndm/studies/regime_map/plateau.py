"""The run length of the map: where DSM+KD's raw proxy FID stops falling.

Measured on one seed at the hardest level: one long DSM+KD run (cosine learning rate
annealed over the whole long run) scored at every checkpoint with the same 500 noises.
Its mid-run checkpoints have a higher learning rate than a run of that length would end
with, so the length found is, if anything, longer than needed.
"""
from typing import Dict, Sequence

PLATEAU_TOL = 0.05  # "stopped falling": no later checkpoint is more than 5 % lower


def plateau_iteration(iters: Sequence[int], fids: Sequence[float],
                      tol: float = PLATEAU_TOL) -> Dict[str, object]:
    """The first checkpoint after which the proxy FID never falls more than ``tol``
    (relative) below its value there.

    Args:
        iters (Sequence[int]): Checkpoint iterations, increasing.
        fids (Sequence[float]): Proxy FID at each.
        tol (float): Relative tolerance. Defaults to :data:`PLATEAU_TOL`.

    Returns:
        dict: ``iters`` (the plateau's first checkpoint), ``fid`` there, ``best`` (the
        lowest later FID) and ``reached`` (False when only the last checkpoint
        qualifies: the run may still be falling).
    """
    if len(iters) != len(fids) or not iters:
        raise ValueError(f'Need one FID per checkpoint, got {len(iters)} / {len(fids)}.')
    if list(iters) != sorted(iters):
        raise ValueError(f'Checkpoints must increase, got {list(iters)}.')
    for i, fid in enumerate(fids):
        best = min(fids[i:])
        if best >= fid * (1 - tol):
            return dict(iters=int(iters[i]), fid=float(fid), best=float(best),
                        reached=i < len(iters) - 1)
    raise AssertionError('unreachable: the last checkpoint always qualifies')
