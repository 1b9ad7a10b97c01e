"""The map's teacher as a file of its own: a content digest and a slim copy.

A map's runs pair by seed only while every student learns from the same teacher, so the
results dir records which teacher that is (``teacher.json``: ``sha256``) and keeps a slim
copy of it (``teacher_ema.pth``: the teacher run's EMA, 0.7-0.9 MB for the study's nets).
A fresh clone then continues the map without its teacher's 45-70 minutes of training,
and a teacher that differs from the recorded one is refused instead of silently mixed in.
"""
import hashlib
import os
import os.path as osp
from typing import Dict

import torch
from torch import Tensor

from mmdiff_2ndm.utils import safe_torch_load

# the teacher run's EMA, under the keys the student configs load it from
# (``teacher_ckpt=dict(prefix='student_ema.module.model.')``)
TEACHER_PREFIX = 'student_ema.module.model.'
SHIPPED_TEACHER = 'teacher_ema.pth'


def teacher_tensors(ckpt: str) -> Dict[str, Tensor]:
    """The teacher's tensors of a checkpoint (a teacher run's or its slim copy), under
    their full keys.

    Raises:
        KeyError: If the checkpoint holds no ``student_ema.module.model.*`` tensor.
    """
    state = safe_torch_load(ckpt, map_location='cpu')
    state = state.get('state_dict', state)
    tensors = {k: v for k, v in state.items() if k.startswith(TEACHER_PREFIX)}
    if not tensors:
        raise KeyError(f'{ckpt} holds no {TEACHER_PREFIX}* tensor: it is not a teacher run\'s '
                       'checkpoint (tools/train.py of a teacher config) nor its slim copy.')
    return tensors


def teacher_digest(ckpt: str) -> str:
    """sha256 over the teacher's tensors (sorted names, dtypes, shapes and values), so a
    full training checkpoint and its slim copy give the same digest; file bytes would not
    (pickling differs)."""
    digest = hashlib.sha256()
    for key, value in sorted(teacher_tensors(ckpt).items()):
        value = value.detach().cpu().contiguous()
        digest.update(f'{key}|{value.dtype}|{tuple(value.shape)}|'.encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_slim_teacher(ckpt: str, path: str, meta: dict) -> str:
    """Writes the teacher's tensors of ``ckpt`` alone to ``path`` (atomically), as the
    student configs load them; returns the digest (equal to ``ckpt``'s)."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    tmp = path + '.tmp'
    torch.save(dict(state_dict=teacher_tensors(ckpt), meta=meta), tmp)
    os.replace(tmp, path)
    return teacher_digest(path)
