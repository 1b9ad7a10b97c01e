"""Test (and evaluate) a checkpoint; the same arguments as MMagic's ``tools/test.py``.

Example:
    python tools/test.py configs/2ndm_cifar10.py work_dirs/2ndm_cifar10/iter_100000.pth
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import mmengine
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import Runner

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
import mmdiff_2ndm  # noqa: E402,F401  (registers components and the safe checkpoint loader)
from mmdiff_2ndm.models.sampling import SAMPLE_MODELS  # noqa: E402
from mmdiff_2ndm.utils import (apply_runner_args, check_local_paths,  # noqa: E402
                               parse_runner_args, prepare_cpu_distributed, runner_arg_parser)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the command line (MMagic's arguments)."""
    parser = runner_arg_parser('Test (and eval) a model', 'test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='the file to save metric results.')
    parser.add_argument(
        '--sample-model', choices=list(SAMPLE_MODELS), default=None,
        help="which network every metric samples: the raw student ('orig'), its EMA "
        "('ema') or the teacher; sets each test metric's sample_model (MMagic's "
        'convention). Defaults to what the config says (usually the EMA).')
    return parse_runner_args(parser, argv)


class SaveMetricHook(Hook):
    """Dumps the test metrics to a file (``--out``)."""

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file

    def after_test_epoch(self, runner, metrics=None) -> None:
        """Writes the metrics once testing ends."""
        if metrics is not None:
            mmengine.dump(metrics, self.out_file)


def set_sample_model(cfg: Config, sample_model: str) -> None:
    """Sets ``sample_model`` on every metric of ``cfg.test_evaluator``."""
    evaluator = cfg.get('test_evaluator')
    if evaluator is None:
        raise ValueError('--sample-model needs a test_evaluator in the config.')
    evaluators = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for item in evaluators:
        metrics = item.get('metrics', item) if isinstance(item, dict) else item
        for metric in metrics if isinstance(metrics, (list, tuple)) else [metrics]:
            metric['sample_model'] = sample_model


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint {args.checkpoint!r} does not exist.')
    cfg = apply_runner_args(Config.fromfile(args.config), args)
    cfg.load_from = args.checkpoint
    if args.sample_model is not None:
        set_sample_model(cfg, args.sample_model)

    check_local_paths(cfg, phases=('test',))
    prepare_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    print_log(f'Working directory: {cfg.work_dir}', logger='current')
    if args.out:
        runner.register_hook(SaveMetricHook(args.out), 'LOWEST')
    runner.test()


if __name__ == '__main__':
    main()
