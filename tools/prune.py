"""One-shot pruning of a config's dense student into a saved pruned checkpoint.

The settings default to the config's ``DiffusionPruningHook`` (in ``custom_hooks``) and
can be overridden on the command line. The output is an mmengine-style checkpoint of the
whole model (``state_dict``) whose ``meta['pruning']`` holds the pruning record, so a run
with the hook (``load_from=...``) or ``tools/test.py`` rebuilds the pruned shapes before
the weights load. Prune -> finetune -> deploy:

    python tools/prune.py configs/2ndm_cifar10.py --ratio 0.3 --groupnorm-ratio 0.25 \
        --out work_dirs/pruned_cifar10.pth
    python tools/train.py configs/2ndm_cifar10.py --cfg-options load_from=work_dirs/pruned_cifar10.pth
"""
import argparse
import json
import os
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
import mmdiff_2ndm  # noqa: E402,F401  (registers components)
from mmdiff_2ndm.engine.hooks import DiffusionPruningHook  # noqa: E402
from mmdiff_2ndm.pruning import IMPORTANCES  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description='Prune the student of a config once')
    parser.add_argument('config', help='config with the model (and its pruning hook)')
    parser.add_argument('--out', help='output checkpoint (default: <work_dir>/pruned.pth)')
    parser.add_argument('--ratio', type=float, help='channel pruning ratio')
    parser.add_argument('--groupnorm-ratio', type=float,
                        help='ratio of GroupNorm-tied groups (default: --ratio)')
    parser.add_argument('--importance', choices=IMPORTANCES)
    parser.add_argument('--target-params', type=float, help='search the ratio for N params')
    parser.add_argument('--target-macs', type=float, help='search the ratio for N MACs')
    parser.add_argument('--prune-num-heads', action='store_true',
                        help='remove whole attention heads instead of head dims')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def hook_from_config(cfg: Config, args: argparse.Namespace) -> DiffusionPruningHook:
    """The config's pruning hook settings, with command-line overrides."""
    hook_cfg = {}
    for hook in cfg.get('custom_hooks', None) or []:
        if hook.get('type') in ('DiffusionPruningHook', DiffusionPruningHook):
            hook_cfg = {k: v for k, v in hook.items() if k not in ('type', 'priority')}
    prune_cfg = dict(hook_cfg.pop('prune_cfg', None) or {})
    if args.ratio is not None:
        hook_cfg['ratio'] = args.ratio
    if args.importance is not None:
        hook_cfg['importance'] = args.importance
    if args.groupnorm_ratio is not None:
        prune_cfg['groupnorm_ratio'] = args.groupnorm_ratio
    if args.target_params is not None:
        prune_cfg['target'] = dict(params=args.target_params)
    if args.target_macs is not None:
        prune_cfg['target'] = dict(macs=args.target_macs)
    if args.prune_num_heads:
        prune_cfg['prune_num_heads'] = True
    prune_cfg['seed'] = args.seed
    return DiffusionPruningHook(prune_cfg=prune_cfg, **hook_cfg)


class _PruneOnlyRunner:
    """The few runner attributes the hook reads, without building a training run."""

    def __init__(self, cfg: Config, model: torch.nn.Module, work_dir: str):
        self.cfg = cfg
        self.model = model
        self.work_dir = work_dir
        self.hooks = []
        self.optim_wrapper = None
        self._cfg_dataloader = cfg.get('train_dataloader', None)
        self._dataloader = None

    @property
    def train_dataloader(self):
        if self._dataloader is None:
            if self._cfg_dataloader is None:
                raise ValueError('Gradient importances need cfg.train_dataloader.')
            self._dataloader = Runner.build_dataloader(self._cfg_dataloader)
        return self._dataloader


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmagic'))
    work_dir = cfg.get('work_dir', None) or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    os.makedirs(work_dir, exist_ok=True)
    out = args.out or osp.join(work_dir, 'pruned.pth')

    from mmagic.registry import MODELS
    model = MODELS.build(cfg.model)
    if hasattr(model, 'init_weights'):
        model.init_weights()
    hook = hook_from_config(cfg, args)
    runner = _PruneOnlyRunner(cfg, model, work_dir)
    hook.prune(runner)

    checkpoint = dict(
        meta=dict(pruning=hook.record, source_config=osp.abspath(args.config)),
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()})
    torch.save(checkpoint, out)
    print_log(f'Saved the pruned model to {out}:\n'
              f'{json.dumps(hook.record["stats"], indent=2)}', logger='current')


if __name__ == '__main__':
    main()
