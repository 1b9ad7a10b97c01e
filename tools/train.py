"""Train a model with MMEngine's runner; the same arguments as MMagic's ``tools/train.py``.

Examples:
    python tools/train.py configs/2ndm_cifar10.py
    python tools/train.py configs/2ndm_cifar10.py --resume                # latest in work dir
    python tools/train.py configs/2ndm_cifar10.py --resume work_dirs/x/iter_2000.pth
    python tools/train.py configs/2ndm_cifar10.py --amp --cfg-options train_cfg.max_iters=10
"""
import argparse
import logging
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.runner import Runner

# The tools work from a source checkout without installing the package.
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
import mmdiff_2ndm  # noqa: E402,F401  (registers components and the safe checkpoint loader)
from mmdiff_2ndm.engine.hooks import RNGStateHook  # noqa: E402
from mmdiff_2ndm.utils import (apply_runner_args, check_local_paths,  # noqa: E402
                               has_accelerator, parse_runner_args, prepare_cpu_distributed,
                               runner_arg_parser)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the command line (MMagic's arguments; ``--resume`` also takes a path)."""
    parser = runner_arg_parser('Train a model', 'train config file path')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume training: without a value from the latest checkpoint in the work dir, '
        'with a value from that checkpoint file')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    return parse_runner_args(parser, argv)


def _to_amp(wrapper_cfg: ConfigDict, where: str) -> None:
    """Switches one optimizer wrapper config to ``AmpOptimWrapper`` in place."""
    wrapper_type = wrapper_cfg.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        print_log(f'AMP is already enabled for {where} in your config.', logger='current',
                  level=logging.WARNING)
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp needs optimizer wrappers of type OptimWrapper, but {where} '
                         f'has type {wrapper_type!r}. Remove --amp or set its type to '
                         f'OptimWrapper/AmpOptimWrapper in the config.')
    wrapper_cfg.type = 'AmpOptimWrapper'
    wrapper_cfg.setdefault('loss_scale', 'dynamic')


def enable_amp(cfg: Config) -> None:
    """Turns every optimizer wrapper of ``cfg`` into an ``AmpOptimWrapper``."""
    optim_wrapper = cfg.optim_wrapper
    if optim_wrapper.get('constructor', 'DefaultOptimWrapperConstructor') == \
            'DefaultOptimWrapperConstructor':
        _to_amp(optim_wrapper, 'optim_wrapper')
        return
    # MultiOptimWrapperConstructor: one wrapper config per submodule name.
    for key, val in optim_wrapper.items():
        if isinstance(val, dict) and ('optimizer' in val or 'type' in val):
            _to_amp(val, f'optim_wrapper.{key}')


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Applies the command-line arguments to ``cfg`` as MMagic's train tool does."""
    apply_runner_args(cfg, args)
    if args.amp:
        if not has_accelerator():
            raise ValueError('--amp needs a CUDA, NPU or MLU device (mmengine\'s '
                             'AmpOptimWrapper does not run on CPU); drop --amp on this machine.')
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)` '
                             'in the config.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: no such checkpoint file.')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main() -> None:
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    # Missing teachers/data/FID networks: one message naming each, before anything loads.
    check_local_paths(cfg, phases=('train', 'val'))
    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    if not any(isinstance(hook, RNGStateHook) for hook in runner.hooks):
        # RNG states in checkpoints: --resume continues with the same random draws.
        runner.register_hook(RNGStateHook())
    print_log(f'Working directory: {cfg.work_dir}', logger='current')
    runner.train()
    print_log(f'Log and checkpoints saved under {cfg.work_dir}', logger='current')


if __name__ == '__main__':
    main()
