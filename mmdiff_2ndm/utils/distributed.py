"""Distributed launch on machines without an accelerator (gloo on CPU)."""
import os
from unittest import mock

import torch
from mmengine.config import Config
from mmengine.device import is_cuda_available, is_mlu_available, is_npu_available
from mmengine.dist import init_dist, is_distributed
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel


def has_accelerator() -> bool:
    """Whether MMEngine sees a CUDA, NPU or MLU device."""
    return is_cuda_available() or is_npu_available() or is_mlu_available()


def prepare_cpu_distributed(cfg: Config) -> None:
    """Lets ``--launcher pytorch|slurm`` run on CPU-only machines (laptops, CI).

    MMEngine 0.10.7 assumes a device to select: ``init_dist`` calls
    ``torch.cuda.set_device(LOCAL_RANK)`` unconditionally (which raises without an
    NVIDIA driver) and the runner gives DDP ``device_ids=[LOCAL_RANK]`` (which torch
    refuses for CPU modules). On a machine with no CUDA/NPU/MLU device this joins the
    process group with gloo, skipping only the device selection, and sets
    ``device_ids=None`` on a DDP-type model wrapper. With an accelerator, or without a
    launcher, it does nothing.

    Args:
        cfg (Config): The merged run config (``launcher``, ``env_cfg.dist_cfg``,
            ``model_wrapper_cfg``); ``model_wrapper_cfg`` is edited in place.

    Raises:
        ValueError: If the config asks for a backend other than gloo (e.g. MMagic's
            default nccl), which cannot run on CPU.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or has_accelerator():
        return
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}))
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise ValueError(
            f'--launcher {launcher} on a machine without CUDA/NPU/MLU needs the gloo '
            f'backend, but env_cfg.dist_cfg.backend is {backend!r}. Add '
            '`--cfg-options env_cfg.dist_cfg.backend=gloo`.')
    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif issubclass(MODEL_WRAPPERS.get(wrapper_cfg.get('type', 'MMDistributedDataParallel')),
                    DistributedDataParallel):
        wrapper_cfg['device_ids'] = None  # a config value wins over the runner's default
    if not is_distributed():
        os.environ.setdefault('LOCAL_RANK', '0')
        # Nothing to select without a device; everything else is MMEngine's own set-up.
        with mock.patch.object(torch.cuda, 'set_device', lambda device: None):
            init_dist(launcher, backend='gloo', **dist_cfg)
