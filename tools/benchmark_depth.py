"""Depth vs width pruning of DiT-XL/2: params, MACs and DDIM sampling time, in one run.

Three models of the facebook/DiT-XL-2-256 layout (diffusers ``DiTTransformer2DModel``,
random weights: cost does not depend on them): the dense 28 blocks, TinyDiT-D14 (14 blocks,
1 of every 2 kept; which ones does not change the cost) and a width-pruned DiT with the
D14's parameter count (head dims and MLP channels of all 28 blocks, ratio searched here).
Each batch size is timed with the models alternating (``benchmark_models``), median of the
repeats:

    python tools/benchmark_depth.py --batch-sizes 1 8 --steps 2 --repeats 2 --threads 2

On a CPU, DiT-XL/2 takes seconds per denoiser call: use few DDIM steps (the time per run is
steps x one forward; the ratios between the models do not depend on the step count).
"""
import argparse
import copy
import json
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.models.layouts import DIT_XL_2_256  # noqa: E402
from mmdiff_2ndm.pruning import (apply_depth, benchmark_models, count_params_macs,  # noqa: E402
                                 format_table, prune_denoiser, search_ratio)


def parse_args() -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description='DiT-XL/2: dense vs depth vs width pruned')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--steps', type=int, default=2, help='DDIM steps per run')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--keep', type=int, default=14, help='blocks of the depth model')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args()


def dit_models(keep: int) -> dict:
    """``dense``, ``depth`` (``keep`` of 28 blocks, evenly spread) and ``width`` (the depth
    model's parameter count by channel pruning)."""
    from diffusers import DiTTransformer2DModel
    torch.manual_seed(0)
    dense = DiTTransformer2DModel(**DIT_XL_2_256).eval()
    num_blocks = DIT_XL_2_256['num_layers']
    if not 1 <= keep < num_blocks:
        raise ValueError(f'--keep must lie in [1, {num_blocks}), got {keep}.')
    kept = sorted({(i + 1) * num_blocks // keep - 1 for i in range(keep)})
    depth = copy.deepcopy(dense)
    apply_depth(depth, dict(module='transformer_blocks', kept=kept, num_blocks=num_blocks))
    # Channel pruning shrinks every block alike and leaves the rest: the ratio that takes
    # a 2-block DiT to the size of a 1-block one takes 28 blocks to the size of 14. It is
    # searched on those (seconds) instead of the 28-block model (minutes per candidate).
    small = {n: count_params_macs(DiTTransformer2DModel(**dict(DIT_XL_2_256, num_layers=n)),
                                  with_macs=False)['params'] for n in (1, 2)}
    share = keep / num_blocks  # the block share to keep, 0.5 for D14
    goal = small[2] - 2 * (1 - share) * (small[2] - small[1])
    ratio, _ = search_ratio(DiTTransformer2DModel(**dict(DIT_XL_2_256, num_layers=2)),
                            dict(params=goal), steps=10)
    width, _ = prune_denoiser(copy.deepcopy(dense), ratio, 'magnitude', with_macs=False)
    print(f'width ratio {ratio:.3f} (head dims and MLP channels removed per block)')
    return dict(dense=dense, **{f'depth_d{keep}': depth}, width=width.eval())


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {name: model.to(args.device) for name, model in dit_models(args.keep).items()}
    all_results = {}
    for batch_size in args.batch_sizes:
        results = benchmark_models(models, batch_size, args.steps, args.repeats)
        all_results[batch_size] = results
        print(f'device={args.device} threads={torch.get_num_threads()} batch={batch_size} '
              f'DDIM steps={args.steps} repeats={args.repeats}')
        print(format_table(results), flush=True)
    if args.out:
        with open(args.out, 'w', encoding='utf-8') as f:
            json.dump(all_results, f, indent=2)


if __name__ == '__main__':
    main()
