"""Test (and evaluate) a checkpoint; the same arguments as MMagic's ``tools/test.py``.

Example:
    python tools/test.py configs/2ndm_cifar10.py work_dirs/2ndm_cifar10/iter_100000.pth
"""
import argparse
import os
import os.path as osp
import sys

import mmengine
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import Runner

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
import mmdiff_2ndm  # noqa: E402,F401  (registers components and the safe checkpoint loader)
from mmdiff_2ndm.utils import check_local_paths, prepare_cpu_distributed  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parses the command line (MMagic's arguments)."""
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='the file to save metric results.')
    parser.add_argument(
        '--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format '
        'will be merged into config file. If the value to be overwritten is a list, it should '
        'be like key="[a,b]" or key=a,b. It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]". Note that the quotation marks are necessary and that no white '
        'space is allowed.')
    parser.add_argument(
        '--sample-model', choices=['orig', 'ema', 'teacher'], default=None,
        help="which network every metric samples: the raw student ('orig'), its EMA "
        "('ema') or the teacher; sets each test metric's sample_model (MMagic's "
        'convention). Defaults to what the config says (usually the EMA).')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


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
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
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
