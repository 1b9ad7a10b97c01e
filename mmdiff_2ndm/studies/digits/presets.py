"""What a digits study runs: the arms, the presets and the order of the runs."""
from typing import Dict, List, Optional, Sequence, Tuple

from ...models.sampling import STUDENT_MODELS, STUDY_NAMES

# name -> (config file in configs/digits/, extra --cfg-options)
ARMS: Dict[str, Tuple[str, List[str]]] = {
    'dsm': ('2ndm_digits16_dsm.py', []),
    'dsm_kd': ('2ndm_digits16_dsm_kd.py', []),
    'dsm_kd_feat': ('2ndm_digits16_dsm_kd_feat.py', []),  # BK-SDM's recipe
    'first_order': ('2ndm_digits16_first_order.py', []),
    '2ndm_unscaled': ('2ndm_digits16_unscaled.py', []),  # the paper's form
    '2ndm': ('2ndm_digits16.py', []),  # sigma_t-scaled, w = 10, quarter batch
    # levers of the 2ndM term, one change each from '2ndm'
    '2ndm_k4': ('2ndm_digits16.py', ['model.losses.jacobian.num_projections=4']),
    '2ndm_full_batch': ('2ndm_digits16.py', ['model.losses.jacobian.batch_fraction=1.0']),
    '2ndm_w1': ('2ndm_digits16.py', ['model.losses.jacobian.loss_weight=1.0']),
    '2ndm_w100': ('2ndm_digits16.py', ['model.losses.jacobian.loss_weight=100.0']),
    '2ndm_small_t': ('2ndm_digits16.py', ['model.losses.jacobian.t_range=(0,99)']),
    '2ndm_unscaled_small_t': ('2ndm_digits16_unscaled.py',
                              ['model.losses.jacobian.t_range=(0,99)']),
}
REFERENCE_ARM = 'dsm_kd'  # every arm is compared with it, paired by seed
# the student as trained ('raw', the package's 'orig') and its EMA
MODELS = tuple(STUDY_NAMES[name] for name in STUDENT_MODELS)

PRESETS = {
    # smoke test, not a measurement
    'tiny': dict(teacher_iters=4, finetune_iters=3, batch_size=8, widths=(8, 16),
                 arms={'dsm_kd': 1, '2ndm': 1}, lever_arms=(), num_samples=48,
                 curve_samples=16, sample_steps=3, eval_images=8,
                 ftle_timesteps=(0, 10, 100, 999), feature_iters=20, bootstrap=10,
                 checkpoints=3, shipped_teacher=False),
    # README command 1: one seed (no confidence intervals), the shipped teacher, the
    # full preset's finetuning length (where DSM+KD recovers) for its two cheapest arms
    'short': dict(teacher_iters=6000, finetune_iters=1500, batch_size=32, widths=None,
                  arms={'dsm': 1, 'dsm_kd': 1}, lever_arms=(), num_samples=256,
                  curve_samples=128, sample_steps=20, eval_images=64,
                  ftle_timesteps=(0, 5, 10, 25, 50, 100, 250, 500, 999),
                  feature_iters=300, bootstrap=50, checkpoints=3, shipped_teacher=True),
    # The README table: 5 seeds of DSM+KD and both 2ndM forms, 3 of DSM and first-order,
    # then one seed of each lever; runs go seed by seed, so that an interrupted study has
    # whole seeds to compare. The finetuning length is where DSM+KD recovers while DSM
    # alone still leaves a gap to the teacher for an arm to close (docs/digits_study).
    # The README tables are this preset (docs/digits_study/results.md).
    'full': dict(teacher_iters=6000, finetune_iters=1500, batch_size=32, widths=None,
                 arms={'dsm_kd': 5, '2ndm_unscaled': 5, '2ndm': 5, 'dsm': 3,
                       'first_order': 3},
                 lever_arms=('2ndm_k4', '2ndm_full_batch', '2ndm_w1', '2ndm_w100',
                             '2ndm_small_t', '2ndm_unscaled_small_t'),
                 num_samples=500, curve_samples=128, sample_steps=50, eval_images=128,
                 ftle_timesteps=(0, 2, 5, 10, 25, 50, 100, 250, 500, 750, 999),
                 feature_iters=1000, bootstrap=200, checkpoints=3, shipped_teacher=True),
}


def planned_runs(preset: dict, seeds: Optional[Sequence[int]] = None,
                 arms: Optional[Sequence[str]] = None, levers: bool = True
                 ) -> List[Tuple[str, int]]:
    """(arm, seed) in training order: seed by seed, then one seed of each lever.

    Args:
        preset (dict): One of :data:`PRESETS`.
        seeds (Sequence[int], optional): These seeds for every arm instead of the
            preset's counts. Defaults to None.
        arms (Sequence[str], optional): These arms instead of the preset's (then no
            levers). Defaults to None.
        levers (bool): Whether to append the preset's lever arms. Defaults to True.
    """
    per_arm = {arm: list(range(n)) for arm, n in preset['arms'].items()}
    if arms:
        per_arm = {arm: per_arm.get(arm, [0]) for arm in arms}
    if seeds:
        per_arm = {arm: list(seeds) for arm in per_arm}
    order = sorted({s for arm_seeds in per_arm.values() for s in arm_seeds})
    runs = [(arm, seed) for seed in order for arm, arm_seeds in per_arm.items()
            if seed in arm_seeds]
    if levers and not arms:
        first = order[0]
        runs += [(arm, first) for arm in preset['lever_arms'] if arm not in per_arm]
    return runs


def checkpoint_interval(preset: dict) -> int:
    """Iterations between the checkpoints of a finetuning run."""
    return max(1, preset['finetune_iters'] // preset['checkpoints'])


def checkpoint_iters(preset: dict) -> List[int]:
    """The iterations at which finetuning runs save a checkpoint (the recovery curve)."""
    iters, interval = preset['finetune_iters'], checkpoint_interval(preset)
    return sorted(set(range(interval, iters, interval)) | {iters})
