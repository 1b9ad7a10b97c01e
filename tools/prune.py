"""One-shot pruning of a config's dense student into a saved pruned checkpoint.

The settings default to the config's ``DiffusionPruningHook`` (in ``custom_hooks``) and
can be overridden on the command line; the pruning itself is
``mmdiff_2ndm.pruning.prune_model``, as in the hook (no Runner is built). The output is an
mmengine-style checkpoint of the whole model (``state_dict``) whose ``meta['pruning']``
holds the pruning record, so a run
with the hook (``load_from=...``) or ``tools/test.py`` rebuilds the pruned shapes before
the weights load. Prune -> finetune -> deploy:

    python tools/prune.py configs/2ndm_cifar10.py --ratio 0.3 --groupnorm-ratio 0.25 \
        --out work_dirs/pruned_cifar10.pth
    python tools/train.py configs/2ndm_cifar10.py \
        --cfg-options load_from=work_dirs/pruned_cifar10.pth

Depth pruning of a DiT (keep 1 of every 2 blocks, TinyFusion's learnable selection):

    python tools/prune.py configs/2ndm_imagenet_dit_d14.py --method depth --keep 1 \
        --group-size 2 --selector learnable --out work_dirs/dit_d14.pth
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
from mmdiff_2ndm.pruning import (DEPTH_SELECTORS, IMPORTANCE_CRITERIA, METHODS,  # noqa: E402
                                 data_losses, format_stats, prune_model, write_summary)


def parse_args() -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description='Prune the student of a config once')
    parser.add_argument('config', help='config with the model (and its pruning hook)')
    parser.add_argument('--out', help='output checkpoint (default: <work_dir>/pruned.pth)')
    parser.add_argument('--ratio', type=float, help='channel pruning ratio')
    parser.add_argument('--groupnorm-ratio', type=float,
                        help='ratio of GroupNorm-tied groups (default: --ratio)')
    parser.add_argument('--importance', choices=tuple(IMPORTANCE_CRITERIA))
    parser.add_argument('--target-params', type=float, help='search the ratio for N params')
    parser.add_argument('--target-macs', type=float, help='search the ratio for N MACs')
    parser.add_argument('--prune-num-heads', action='store_true',
                        help='remove whole attention heads instead of head dims')
    parser.add_argument('--method', choices=METHODS,
                        help='width (channels), depth (whole DiT blocks) or depth+width')
    parser.add_argument('--keep', type=int, help='depth: blocks kept per group (N of N:M)')
    parser.add_argument('--group-size', type=int, help='depth: blocks per group (M of N:M)')
    parser.add_argument('--selector', choices=tuple(DEPTH_SELECTORS),
                        help='depth: how the kept blocks are chosen')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def hook_from_config(cfg: Config, args: argparse.Namespace) -> DiffusionPruningHook:
    """The config's pruning hook settings, with command-line overrides (validated by the
    hook's constructor)."""
    hook_cfg = {}
    for hook in cfg.get('custom_hooks', None) or []:
        if hook.get('type') in ('DiffusionPruningHook', DiffusionPruningHook):
            hook_cfg = {k: v for k, v in hook.items() if k not in ('type', 'priority')}
    prune_cfg = dict(hook_cfg.pop('prune_cfg', None) or {})
    depth_cfg = dict(hook_cfg.pop('depth_cfg', None) or {})
    for key in ('ratio', 'importance', 'method'):
        if getattr(args, key) is not None:
            hook_cfg[key] = getattr(args, key)
    if args.groupnorm_ratio is not None:
        prune_cfg['groupnorm_ratio'] = args.groupnorm_ratio
    if args.target_params is not None:
        prune_cfg['target'] = dict(params=args.target_params)
    if args.target_macs is not None:
        prune_cfg['target'] = dict(macs=args.target_macs)
    if args.prune_num_heads:
        prune_cfg['prune_num_heads'] = True
    prune_cfg['seed'] = args.seed
    for key in ('keep', 'group_size', 'selector'):
        if getattr(args, key) is not None:
            depth_cfg[key] = getattr(args, key)
    if 'depth' in hook_cfg.get('method', 'width'):
        depth_cfg.setdefault('seed', args.seed)
    return DiffusionPruningHook(prune_cfg=prune_cfg, depth_cfg=depth_cfg or None, **hook_cfg)


def prune_from_config(cfg: Config, model: torch.nn.Module, hook: DiffusionPruningHook) -> dict:
    """Prunes ``model`` with the hook's settings; data come from ``cfg.train_dataloader``
    only when the settings need a loss."""

    def dataloader():
        if cfg.get('train_dataloader', None) is None:
            raise ValueError('These pruning settings need data: the config has no '
                             'train_dataloader.')
        return Runner.build_dataloader(cfg.train_dataloader)

    loss_fn, depth_cfg = data_losses(model, hook.method, hook.width_cfg, hook.depth_cfg,
                                     dataloader)
    return prune_model(model, hook.method, width=hook.width_cfg, depth=depth_cfg,
                       loss_fn=loss_fn, student_key=hook.student_key, ema_key=hook.ema_key)


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
    record = prune_from_config(cfg, model, hook_from_config(cfg, args))
    write_summary(record, work_dir)

    checkpoint = dict(
        meta=dict(pruning=record, source_config=osp.abspath(args.config)),
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()})
    torch.save(checkpoint, out)
    print_log(f'Saved the pruned model to {out}:\n{format_stats(record)}\n'
              f'{json.dumps(record["stats"], indent=2)}', logger='current')


if __name__ == '__main__':
    main()
