"""A regime map of recovery recipes on the download-free digits study (issue 24).

Axes: pruning level x recipe x sampler, each run trained to DSM+KD's plateau and scored
with every sampler on the same checkpoint, 3 paired seeds per cell to screen. Run by
``tools/regime_map.py``; reuses the digits study's training runs, evaluator and
statistics (:mod:`mmdiff_2ndm.studies.digits`).

Modules: :mod:`.axes` (levels, recipes, samplers, presets, run order), :mod:`.plateau`
(the run length), :mod:`.scoring` (every sampler on one checkpoint, Jacobian statistics),
:mod:`.driver` (teacher, plateau, screen; one JSON per scored run), :mod:`.report`
(README.md, heatmaps, plateau figure).
"""
from .axes import (LEVELS, PRESETS, RECIPES, REFERENCE, SAMPLERS, level_options,
                   planned_runs, run_iters)
from .driver import RegimeMap, load_results
from .plateau import plateau_iteration
from .report import heatmap, paired, write_report

__all__ = ['LEVELS', 'PRESETS', 'RECIPES', 'REFERENCE', 'SAMPLERS', 'RegimeMap',
           'heatmap', 'level_options', 'load_results', 'paired', 'planned_runs',
           'plateau_iteration', 'run_iters', 'write_report']
