"""Time per training iteration of the map's recipes, measured back to back in one process.

The screen's runs share the 2-core machine with one to three other trainings, so the
seconds per iteration in their logs depend on what else ran at the time, not only on the
recipe. The cost at equal wall-clock is read instead from one process that builds every
recipe's trainer (its config and options, its finished run's pruned student, optimizer
and data) and runs their training steps in short blocks, round robin, with the recipes'
order rotated every round: whatever else loads the machine meets every recipe alike.
Each recipe's time per iteration is the median over its blocks.
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence

from torch import nn

from ..digits.evaluation import run_config


def build_train_step(config: str, options: List[str], ckpt: Optional[str],
                     work_dir: str, switch_mode: bool = False,
                     prepare: Optional[Callable[[nn.Module], None]] = None
                     ) -> Callable[[], None]:
    """One training iteration of a run, as the runner would do it: its config with the
    run's --cfg-options, the pruned student of its checkpoint, its optimizer and data.

    Args:
        config (str): The run's config: a path, or a file name in configs/digits/.
        options (List[str]): The run's --cfg-options.
        ckpt (str, optional): A checkpoint of the run (its pruning record rebuilds the
            student); None trains the student as the config builds it (before any
            pruning hook has run: a copy of the teacher where ``student=None``).
        work_dir (str): Scratch dir of the runner (logs).
        switch_mode (bool): Call ``model.train()`` before each iteration, as MMEngine's
            ``IterBasedTrainLoop`` does. Defaults to False.
        prepare (callable, optional): Called with the built model (pruned, in train
            mode) before the first iteration, e.g. to swap a method for a variant.
            Defaults to None.

    Returns:
        Callable[[], None]: Runs one iteration (forward, backward, optimizer and EMA
        update) on the next training batch.
    """
    from mmengine.runner import Runner

    cfg = run_config(config, options, work_dir)
    cfg.test_dataloader = cfg.test_cfg = cfg.test_evaluator = None
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    if ckpt is not None:
        runner.load_checkpoint(ckpt)  # DiffusionPruningHook rebuilds the pruned student
    model = runner.model.train()
    if prepare is not None:
        prepare(model)
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    loader = runner.build_dataloader(cfg.train_dataloader)
    batches = iter(loader)

    def step() -> None:
        nonlocal batches
        try:
            data = next(batches)
        except StopIteration:
            batches = iter(loader)
            data = next(batches)
        if switch_mode:
            model.train()
        model.train_step(data, optim_wrapper)

    return step


def time_steps(steps: Dict[str, Callable[[], None]], rounds: int, block: int,
               warmup: int = 2, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Seconds per iteration of each step function, measured round robin.

    Args:
        steps (dict): Name -> one training iteration.
        rounds (int): Blocks timed per name.
        block (int): Iterations per timed block.
        warmup (int): Untimed iterations per name first. Defaults to 2.
        clock (callable): The timer. Defaults to ``time.perf_counter``.

    Returns:
        dict: Name -> ``dict(median=, q25=, q75=, blocks=[...])``, seconds per iteration.
    """
    if rounds < 1 or block < 1:
        raise ValueError(f'rounds and block must be >= 1, got {rounds} and {block}.')
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            for _ in range(block):
                steps[name]()
            times[name].append((clock() - start) / block)
    out = {}
    for name, values in times.items():
        q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        out[name] = dict(median=statistics.median(values), q25=q[0], q75=q[-1],
                         blocks=values)
    return out


def timing_ratios(times: dict, references: Dict[str, str]) -> Dict[str, float]:
    """Each name's median time per iteration over its reference's (names whose
    reference was timed too)."""
    return {name: times[name]['median'] / times[ref]['median']
            for name, ref in references.items()
            if name in times and ref in times and name != ref}


def describe(times: dict, ratios: Dict[str, float], names: Sequence[str]) -> List[str]:
    """Lines for a log: each name's median [quartiles] and its ratio."""
    return [f'{name}: {1e3 * times[name]["median"]:.1f} ms/iter '
            f'[{1e3 * times[name]["q25"]:.1f}, {1e3 * times[name]["q75"]:.1f}]' +
            (f', {ratios[name]:.2f}x its reference' if name in ratios else '')
            for name in names if name in times]


def parse_variant_benchmark_args(description: str,
                                 argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line of the benchmarks that time two code paths of one config's training
    round robin (``tools/benchmark_preprocessor.py``, ``tools/benchmark_host_overhead.py``).

    Args:
        description (str): What the benchmark times.
        argv (Sequence[str], optional): The arguments. Defaults to None (``sys.argv``).

    Returns:
        argparse.Namespace: ``config``, ``ckpt``, ``batch``, ``rounds``, ``block``,
        ``threads``, ``out``.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', nargs='?', default='configs/digits/2ndm_digits16_dsm_kd.py')
    parser.add_argument('--ckpt', help="a checkpoint of the config's run (pruned student)")
    parser.add_argument('--batch', type=int, help='training batch size (default: the config)')
    parser.add_argument('--rounds', type=int, default=8, help='timed blocks per variant')
    parser.add_argument('--block', type=int, default=5, help='iterations per block')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--out', help='write the results as JSON here')
    return parser.parse_args(argv)
