"""The command line that ``tools/train.py`` and ``tools/test.py`` share with MMagic's tools:
a config, ``--work-dir``, ``--cfg-options``, ``--launcher`` and the launchers' local rank."""
import argparse
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction

LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


def runner_arg_parser(description: str, config_help: str) -> argparse.ArgumentParser:
    """A parser with the arguments every runner tool takes; the tool adds its own.

    Args:
        description (str): The tool's description.
        config_help (str): Help of the positional ``config``.

    Returns:
        argparse.ArgumentParser: ``config``, ``--work-dir``, ``--cfg-options``,
        ``--launcher`` and ``--local-rank`` / ``--local_rank``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=config_help)
    parser.add_argument('--work-dir', help='the dir to save logs, models and metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format '
        'will be merged into config file. If the value to be overwritten is a list, it should '
        'be like key="[a,b]" or key=a,b. It also allows nested list/tuple values, e.g. '
        'key="[(a,b),(c,d)]". Note that the quotation marks are necessary and that no white '
        'space is allowed.')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    # torch.distributed launchers pass ``--local-rank`` (torch >= 2.0) or ``--local_rank``.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_runner_args(parser: argparse.ArgumentParser,
                      argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses ``argv`` (None: ``sys.argv``) and exports ``LOCAL_RANK`` for MMEngine when
    the launcher did not set it.

    Args:
        parser (argparse.ArgumentParser): From :func:`runner_arg_parser`.
        argv (list[str], optional): The arguments. Defaults to None.

    Returns:
        argparse.Namespace: The parsed arguments.
    """
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def apply_runner_args(cfg: Config, args: argparse.Namespace) -> Config:
    """Applies ``--launcher``, ``--cfg-options`` and ``--work-dir`` to ``cfg`` in place.

    The work dir is, in this order: ``--work-dir``, the config's ``work_dir``,
    ``./work_dirs/<config file name>``.

    Args:
        cfg (Config): The loaded config.
        args (argparse.Namespace): From :func:`parse_runner_args`.

    Returns:
        Config: ``cfg``.
    """
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg
