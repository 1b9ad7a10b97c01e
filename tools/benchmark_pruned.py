"""Params, MACs and DDIM sampling throughput of a dense vs a pruned denoiser, in one run.

Either from a config and a pruned checkpoint (``tools/prune.py`` or a training run with
``DiffusionPruningHook``):

    python tools/benchmark_pruned.py --config configs/2ndm_cifar10.py \
        --checkpoint work_dirs/pruned_cifar10.pth

or on the google/ddpm-cifar10-32 layout with random weights, pruned here:

    python tools/benchmark_pruned.py --cifar10-ddpm --ratio 0.3 --groupnorm-ratio 0.25
"""
import argparse
import copy
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.models.denoisers import unwrap_denoiser  # noqa: E402
from mmdiff_2ndm.models.layouts import DDPM_CIFAR10_32  # noqa: E402
from mmdiff_2ndm.pruning import (benchmark_models, check_state_dict_shapes,  # noqa: E402
                                 format_table, prune_denoiser, rebuild_pruned)


def parse_args() -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description='Dense vs pruned denoiser benchmark')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--config', help='config whose model has the dense student')
    source.add_argument('--cifar10-ddpm', action='store_true',
                        help='google/ddpm-cifar10-32 layout, random weights, pruned here')
    parser.add_argument('--checkpoint', help='pruned checkpoint (with --config)')
    parser.add_argument('--student-key', default='student')
    parser.add_argument('--ratio', type=float, default=0.3)
    parser.add_argument('--groupnorm-ratio', type=float, default=0.25)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=10, help='DDIM steps per run')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args()


def cifar10_ddpm_pair(ratio: float, groupnorm_ratio: float):
    """Dense google/ddpm-cifar10-32 layout and its pruned copy."""
    from diffusers import UNet2DModel
    torch.manual_seed(0)
    dense = UNet2DModel(**DDPM_CIFAR10_32)
    pruned, _ = prune_denoiser(copy.deepcopy(dense), ratio, 'magnitude',
                               groupnorm_ratio=groupnorm_ratio, with_macs=False)
    return dense, pruned


def config_pair(config: str, checkpoint: str, student_key: str):
    """The config's dense student and the same student rebuilt from a pruned checkpoint."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmdiff_2ndm  # noqa: F401  (registers components)
    from mmagic.registry import MODELS
    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmagic'))
    model = MODELS.build(cfg.model)
    dense = unwrap_denoiser(getattr(model, student_key))
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    record = ckpt.get('meta', {}).get('pruning')
    if record is None:
        raise ValueError(f'{checkpoint} holds no pruning record (meta.pruning).')
    prefix = next(name for name, m in model.named_modules() if m is dense) + '.'
    pruned = rebuild_pruned(copy.deepcopy(dense), record)
    state = {k[len(prefix):]: v for k, v in ckpt['state_dict'].items() if k.startswith(prefix)}
    check_state_dict_shapes(pruned, state, what=checkpoint)
    pruned.load_state_dict(state)
    return dense, pruned


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cifar10_ddpm:
        dense, pruned = cifar10_ddpm_pair(args.ratio, args.groupnorm_ratio)
    else:
        if not args.checkpoint:
            raise ValueError('--config needs --checkpoint (a pruned checkpoint).')
        dense, pruned = config_pair(args.config, args.checkpoint, args.student_key)
    models = dict(dense=dense.to(args.device), pruned=pruned.to(args.device))
    results = benchmark_models(models, args.batch_size, args.steps, args.repeats)
    print(f'device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} '
          f'DDIM steps={args.steps} repeats={args.repeats}')
    print(format_table(results))
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
