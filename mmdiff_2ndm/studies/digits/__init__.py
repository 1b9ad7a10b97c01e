"""Download-free evidence study on real data: scikit-learn digits at 16x16.

Run by ``tools/digits_study.py`` with the configs in ``configs/digits/``:

1. trains the dense teacher DDPM (``teacher_digits16.py``: DSM from scratch);
2. prunes it (diff-pruning, ``DiffusionPruningHook``, ratio and GroupNorm groups as in
   ``2ndm_digits16.py``) and finetunes the student with each arm of the preset (DSM,
   DSM+KD, first-order Jacobian, 2ndM unscaled / sigma-scaled, and the 2ndM levers), paired
   by seed: every arm of a seed starts from the same pruned weights and sees the same data
   order and the same per-sample noise (``model.per_sample_noise_seed``);
3. evaluates the dense teacher and, at every checkpoint of every run, the raw student and
   its EMA (:mod:`.evaluation`, proxy FID with :mod:`.feature_net`);
4. writes ``results.md`` (:mod:`.report`, statistics in :mod:`.statistics`),
   ``results.json``, ``grid_<arm>_<raw|ema>.png``, ``recovery.png`` and ``ftle.png``
   (:mod:`.figures`).

Modules: :mod:`.presets` (arms, presets, run order), :mod:`.runs` (training runs),
:mod:`.study` (the driver).
"""
from .feature_net import DigitFeatureNet, train_feature_net
from .presets import ARMS, MODELS, PRESETS, REFERENCE_ARM, planned_runs
from .statistics import (equal_wallclock, gap_closed, paired_differences,
                         recovery_summary, verdict)
from .study import Study

__all__ = ['ARMS', 'MODELS', 'PRESETS', 'REFERENCE_ARM', 'DigitFeatureNet', 'Study',
           'equal_wallclock', 'gap_closed', 'paired_differences',
           'planned_runs', 'recovery_summary', 'train_feature_net', 'verdict']
