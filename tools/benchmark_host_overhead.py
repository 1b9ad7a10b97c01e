"""Host time the distiller spends outside the networks, per training iteration: the
project's code paths against the MMEngine / PyTorch ones they replace.

Two per-iteration costs that grow with the number of modules and tensors, not with the
batch, so they weigh most on small batches (the regime map's batch-2 runs) and on a GPU:

* ``model.train()``, which MMEngine's loop calls before every iteration: the full switch
  (``DiffusionDistiller.set_modes``, PyTorch's walk) sets the flags of every module of the
  teacher, the student and its EMA again; ``DiffusionDistiller.train`` returns at once
  when nothing changed;
* the EMA update: MMEngine's loops over the tensors and computes the warm-up decay per
  tensor; ``WarmupExponentialMovingAverage`` computes it once and averages every tensor
  with one ``torch._foreach_lerp_`` (bitwise the same average).

Measured in one process, round robin (``time_steps``), so that load from elsewhere meets
both alike: each part alone (milliseconds per call) and whole training iterations as
MMEngine's loop runs them (``model.train()``, then ``train_step``), with the project's
paths (``project``) and with the full switch plus MMEngine's
``BaseAveragedModel.update_parameters`` (``mmengine``).

    python tools/benchmark_host_overhead.py configs/digits/2ndm_digits16_dsm_kd.py \\
        --batch 2 --ckpt <a pruned run's checkpoint> --threads 1
"""
import json
import os.path as osp
import sys
import tempfile
import types
from typing import Callable, Dict

import torch
from mmengine.model import BaseAveragedModel
from torch import nn

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.studies.regime_map.timing import (  # noqa: E402
    build_train_step, describe, parse_variant_benchmark_args, time_steps, timing_ratios)

VARIANTS = ('mmengine', 'project')


def use_mmengine_paths(model: nn.Module) -> None:
    """Points one distiller's mode switch and EMA update at the paths they replace."""
    model.train = types.MethodType(type(model).set_modes, model)
    ema = model.student_ema
    ema.update_parameters = types.MethodType(BaseAveragedModel.update_parameters, ema)


def part_steps(model: nn.Module) -> Dict[str, Dict[str, Callable[[], None]]]:
    """Part -> variant -> one call of that part on ``model``."""
    ema, student = model.student_ema, model.student
    return dict(
        mode_switch=dict(mmengine=lambda: type(model).set_modes(model),
                         project=lambda: type(model).train(model)),
        ema_update=dict(
            mmengine=lambda: BaseAveragedModel.update_parameters(ema, student),
            project=lambda: type(ema).update_parameters(ema, student)))


def main() -> None:
    """Times both variants part by part and in training iterations; prints the ratios."""
    args = parse_variant_benchmark_args('Host time outside the networks')
    if args.threads:
        torch.set_num_threads(args.threads)
    options = [] if args.batch is None else [f'train_dataloader.batch_size={args.batch}']
    config = osp.abspath(args.config)
    built = {}
    references = {VARIANTS[1]: VARIANTS[0]}

    def keep(variant: str) -> Callable[[nn.Module], None]:
        def prepare(model: nn.Module) -> None:
            built[variant] = model
            if variant == 'mmengine':
                use_mmengine_paths(model)
        return prepare

    with tempfile.TemporaryDirectory() as work_dir:
        steps = {variant: build_train_step(config, options, args.ckpt,
                                           osp.join(work_dir, variant), switch_mode=True,
                                           prepare=keep(variant))
                 for variant in VARIANTS}
        iterations = time_steps(steps, rounds=args.rounds, block=args.block)
        parts = {name: time_steps(calls, rounds=args.rounds, block=args.block * 20)
                 for name, calls in part_steps(built['project']).items()}
    result = dict(config=args.config, ckpt=args.ckpt, batch=args.batch,
                  threads=torch.get_num_threads(), train_iteration=iterations,
                  ratio_iteration=timing_ratios(iterations, references)[VARIANTS[1]],
                  parts=parts,
                  ratio_parts={name: timing_ratios(times, references)[VARIANTS[1]]
                               for name, times in parts.items()},
                  saved_share={name: (times['mmengine']['median'] - times['project']['median'])
                               / iterations['mmengine']['median']
                               for name, times in parts.items()})
    for name, times in [('training iteration', iterations), *parts.items()]:
        ratio = (result['ratio_iteration'] if times is iterations
                 else result['ratio_parts'][name])
        print(f'{name}:')
        print('\n'.join('  ' + line for line in describe(times, {VARIANTS[1]: ratio}, VARIANTS)))
    print('saved, as a share of an MMEngine-path iteration: ' + ', '.join(
        f'{name} {100 * share:.1f} %' for name, share in result['saved_share'].items()))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
