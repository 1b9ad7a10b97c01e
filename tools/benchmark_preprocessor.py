"""Host time of the data preprocessor: MMagic's ``DataPreprocessor`` against the
project's ``DiffusionDataPreprocessor``, alone and as a share of a training iteration.

Both turn the same dataloader batches into the same model inputs and stacked data samples
(tests/test_models/test_data_preprocessors); MMagic's deep-copies every sample's metainfo
twice on the way. Measured in one process, round robin (``time_steps``), so that load
from elsewhere meets both alike:

* the preprocessor alone on batches of a config's training data (milliseconds per batch);
* whole training iterations of the config (forward, backward, optimizer and EMA update)
  with each preprocessor (seconds per iteration), and their ratio.

Without ``--ckpt`` the student is the one the config builds (for the digits configs a
dense copy of the teacher: the pruning hook has not run), so the preprocessor's share of a
pruned student's iteration is larger than printed.

    python tools/benchmark_preprocessor.py configs/digits/2ndm_digits16_dsm_kd.py --threads 1
"""
import copy
import json
import os.path as osp
import sys
import tempfile

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.studies.regime_map.timing import (  # noqa: E402
    build_train_step, describe, parse_variant_benchmark_args, time_steps, timing_ratios)

PREPROCESSORS = ('DataPreprocessor', 'DiffusionDataPreprocessor')


def preprocessor_steps(config: str, options: list, work_dir: str, calls: int) -> dict:
    """Name -> one preprocessor call (training mode) on a fresh copy of a loader batch;
    the ``calls`` copies each are made here, untimed."""
    from mmagic.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from mmdiff_2ndm.studies.digits.evaluation import run_config
    cfg = run_config(osp.abspath(config), options, work_dir)
    init_default_scope(cfg.get('default_scope', 'mmagic'))
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    model_cfg = cfg.model.get('data_preprocessor') or {}
    steps = {}
    for name in PREPROCESSORS:
        preprocessor = MODELS.build(dict(model_cfg, type=name))
        copies = [copy.deepcopy(batch) for _ in range(calls)]
        steps[name] = (lambda pre, fresh: lambda: pre(fresh.pop(), True))(preprocessor, copies)
    return steps


def main() -> None:
    """Times both preprocessors alone and in training iterations; prints the ratios."""
    args = parse_variant_benchmark_args('Host time of the data preprocessor')
    if args.threads:
        torch.set_num_threads(args.threads)
    options = [] if args.batch is None else [f'train_dataloader.batch_size={args.batch}']
    with tempfile.TemporaryDirectory() as work_dir:
        block = args.block * 4  # a call takes milliseconds: longer blocks
        alone = time_steps(
            preprocessor_steps(args.config, options, work_dir, args.rounds * block + 2),
            rounds=args.rounds, block=block)
        iterations = time_steps(
            {name: build_train_step(osp.abspath(args.config),
                                    options + [f'model.data_preprocessor.type={name}'],
                                    args.ckpt, osp.join(work_dir, name))
             for name in PREPROCESSORS},
            rounds=args.rounds, block=args.block)
    references = {PREPROCESSORS[1]: PREPROCESSORS[0]}
    result = dict(config=args.config, ckpt=args.ckpt, batch=args.batch,
                  threads=torch.get_num_threads(), preprocessor_alone=alone,
                  train_iteration=iterations,
                  ratio_alone=timing_ratios(alone, references)[PREPROCESSORS[1]],
                  ratio_iteration=timing_ratios(iterations, references)[PREPROCESSORS[1]])
    print('preprocessor alone, per batch:')
    print('\n'.join('  ' + line for line in describe(
        alone, {PREPROCESSORS[1]: result['ratio_alone']}, PREPROCESSORS)))
    print('training iteration:')
    print('\n'.join('  ' + line for line in describe(
        iterations, {PREPROCESSORS[1]: result['ratio_iteration']}, PREPROCESSORS)))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
