"""Runs tools/train.py on a machine without CUDA under torchrun (test-only shim).

mmengine's ``--launcher pytorch`` calls ``torch.cuda.set_device(LOCAL_RANK)``
unconditionally (mmengine 0.10.7, ``_init_dist_pytorch``), which raises without an
NVIDIA driver; with no CUDA device there is nothing to select, so it is a no-op here.
"""
import os.path as osp
import runpy
import sys

import torch

if not torch.cuda.is_available():
    torch.cuda.set_device = lambda device: None

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.argv[0] = osp.join(REPO, 'tools', 'train.py')
runpy.run_path(sys.argv[0], run_name='__main__')
