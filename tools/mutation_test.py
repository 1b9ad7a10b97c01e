"""Mutation score of the core: hand-written mutants, each one run against its own tests.

A mutant is one textual replacement in one source file (a plausible bug: a wrong sign,
power, target, pairing, decay, channel order...). For each, this script applies it, runs
the few test files or test functions that should notice, and restores the file (always:
``try/finally``, also on Ctrl-C and SIGTERM). A mutant is *caught* when pytest reports
failing tests (exit status 1); a passing run means it *survived*, i.e. the tests miss
that bug. Any other exit status (collection error, no test ran, timeout) is an error of
the mutant or of this list and is reported as such.

    python tools/mutation_test.py                  # every mutant, prints caught / total
    python tools/mutation_test.py --list           # names, files, tests
    python tools/mutation_test.py --only ema-lerp loss-2ndm-abs

The mutated file's cached bytecode is deleted whenever its text changes, so no stale
``.pyc`` of a mutant or of the original is ever imported; pytest runs with
``OMP_NUM_THREADS=1`` unless set. Exit status: 0 when every mutant is caught, 1 when
some survived, 2 on errors.
"""
import argparse
import contextlib
import importlib.util
import os
import os.path as osp
import signal
import subprocess
import sys
import time
from typing import Iterator, List, NamedTuple, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

LOSS_TESTS = ('tests/test_models/test_losses/test_second_order_match_loss.py', )
SCHEDULE_TESTS = 'tests/test_models/test_distillers/test_distiller_schedules.py'
CLOSED_FORMS = (f'{SCHEDULE_TESTS}::test_dsm_and_kd_equal_their_closed_forms', )
ANTITHETIC_TESTS = ('tests/test_distributed/test_sample_tied_noise.py', )
EMA_TESTS = ('tests/test_models/test_averaged_model.py', )
FEATURE_TESTS = ('tests/test_models/test_losses/test_feature_kd_loss.py', )
LOSS_SET_TESTS = ('tests/test_models/test_distillers/test_open_loss_set.py', )
GUARD_TESTS = ('tests/test_models/test_distillers/test_nonfinite_guard.py', )
DEPTH_TESTS = 'tests/test_pruning/test_depth.py'
LOAD_TESTS = 'tests/test_apis/test_load_paths.py'
EMA_OPTION_TESTS = 'tests/test_models/test_averaged_model.py'
VIS_TESTS = ('tests/test_engine/test_hooks/test_visualization_hook.py', )


class Mutant(NamedTuple):
    """One hand-written bug.

    Attributes:
        name (str): Short unique name.
        path (str): Source file, relative to the repository root.
        before (str): Text that occurs exactly once in ``path``.
        after (str): Its replacement.
        tests (tuple[str]): pytest paths or node ids that should fail.
    """
    name: str
    path: str
    before: str
    after: str
    tests: Tuple[str, ...]


LOSS = 'mmdiff_2ndm/models/losses/second_order_match_loss.py'
DISTILLER = 'mmdiff_2ndm/models/distillers/diffusion_distiller.py'
DRAWS = 'mmdiff_2ndm/models/distillers/training_draws.py'
STEP_GUARD = 'mmdiff_2ndm/models/distillers/student_update.py'
SQUARED_ERROR = 'mmdiff_2ndm/models/losses/squared_error.py'
KD = 'mmdiff_2ndm/models/losses/kd_loss.py'
FEATURE_KD = 'mmdiff_2ndm/models/losses/feature_kd_loss.py'
FEATURE_POINTS = 'mmdiff_2ndm/models/losses/feature_points.py'
RECORDER = 'mmdiff_2ndm/models/feature_recorder.py'
NOISE_SCHEDULE = 'mmdiff_2ndm/models/distillers/noise_schedule.py'
EMA = 'mmdiff_2ndm/models/averaged_model.py'
RECORD = 'mmdiff_2ndm/pruning/record.py'
STATE_DICT = 'mmdiff_2ndm/utils/state_dict.py'
PREPROCESSOR = 'mmdiff_2ndm/models/data_preprocessors/diffusion_data_preprocessor.py'
DEPTH = 'mmdiff_2ndm/pruning/depth.py'
STRUCTURAL = 'mmdiff_2ndm/pruning/structural.py'
RULES = 'mmdiff_2ndm/pruning/rules.py'
STRUCTURAL_TESTS = 'tests/test_pruning/test_structural.py'
CLASS_EMBEDDER = 'mmdiff_2ndm/models/compvis_ldm.py'
SAMPLER = 'mmdiff_2ndm/models/distillers/sampler.py'
VIS_HOOK = 'mmdiff_2ndm/engine/hooks/visualization_hook.py'
PRUNING_HOOK = 'mmdiff_2ndm/engine/hooks/pruning_hook.py'
PROGRESS_HOOK = 'mmdiff_2ndm/engine/hooks/sampling_progress_hook.py'
DIGITS = 'mmdiff_2ndm/datasets/digits_dataset.py'
COCO = 'mmdiff_2ndm/datasets/coco_caption_dataset.py'
INFERENCE = 'mmdiff_2ndm/apis/inference.py'
EXPORT = 'mmdiff_2ndm/apis/export.py'
TOOL_TESTS = 'tests/test_tools/test_sample_and_export_tools.py'
STUDY_EVALUATION = 'mmdiff_2ndm/studies/digits/evaluation.py'
FOLLOW_UP = 'mmdiff_2ndm/studies/regime_map/followup.py'
MAP_AXES = 'mmdiff_2ndm/studies/regime_map/axes.py'
MAP_DRIVER = 'mmdiff_2ndm/studies/regime_map/driver.py'
MAP_TIMING = 'mmdiff_2ndm/studies/regime_map/timing.py'
MAP_COMBINE = 'mmdiff_2ndm/studies/regime_map/combine.py'
STUDY_RUNS = 'mmdiff_2ndm/studies/digits/runs.py'
STUDY_STATISTICS = 'mmdiff_2ndm/studies/digits/statistics.py'
MAP_TEACHER = 'mmdiff_2ndm/studies/regime_map/teacher_file.py'
MAP_REPORT = 'mmdiff_2ndm/studies/regime_map/report.py'
MAP_LENGTHS = 'mmdiff_2ndm/studies/regime_map/lengths.py'
MAP_SCHEDULE = 'mmdiff_2ndm/studies/regime_map/schedule.py'
MAP_CELLS = 'mmdiff_2ndm/studies/regime_map/cells.py'
MAP_PARKING = 'mmdiff_2ndm/studies/regime_map/parking.py'
MAP_TESTS = 'tests/test_studies/test_regime_map'

MUTANTS: List[Mutant] = [
    # the 2ndMatch loss
    Mutant('loss-2ndm-abs', LOSS, 'term = (student_sq - teacher_sq).pow(2)',
           'term = (student_sq - teacher_sq).abs()', LOSS_TESTS),
    Mutant('loss-first-order-mean', LOSS,
           'term = (student_jac - teacher_jac).pow(2).flatten(1).sum(1)',
           'term = (student_jac - teacher_jac).pow(2).flatten(1).mean(1)', LOSS_TESTS),
    # the sigma_t scaling: s^4 on the squared difference of squared norms, s^2 first-order
    Mutant('loss-log-ratio-unsquared', LOSS, '- teacher_sq.clamp_min(tiny).log()).pow(2)',
           '- teacher_sq.clamp_min(tiny).log()).abs()', LOSS_TESTS),
    Mutant('loss-scale-power', LOSS,
           "term = term * (factor.pow(2) if self.mode != 'first_order' else factor)",
           'term = term * factor', LOSS_TESTS),
    Mutant('distiller-sigma', NOISE_SCHEDULE,
           'return (1.0 - alphas_cumprod[timesteps]).sqrt().float()',
           'return alphas_cumprod[timesteps].sqrt().float()',
           (f'{SCHEDULE_TESTS}::test_sigma_scale_reaches_the_jacobian_loss', )),
    # antithetic timestep pairs (t, T-1-t)
    Mutant('antithetic-off-by-one', DRAWS,
           'return torch.where(is_second, num_t - 1 - pair_timesteps, pair_timesteps)',
           'return torch.where(is_second, num_t - pair_timesteps, pair_timesteps)',
           ANTITHETIC_TESTS),
    Mutant('antithetic-per-sample-unpaired', DRAWS,
           'mix_seed(seed, iteration, idx // 2, salt=1)',
           'mix_seed(seed, iteration, idx, salt=1)', ANTITHETIC_TESTS),
    # the warm-up EMA
    Mutant('ema-no-warmup', EMA,
           'return min(1.0 - self.momentum, (1.0 + steps) / (10.0 + steps))',
           'return 1.0 - self.momentum', EMA_TESTS),
    Mutant('ema-lerp', EMA, 'averaged_param.lerp_(source_param, 1.0 - self.decay(steps))',
           'averaged_param.lerp_(source_param, self.decay(steps))', EMA_TESTS),
    Mutant('ema-fused-update-next-decay', EMA,
           'torch._foreach_lerp_(list(averaged), list(sources), 1.0 - self.decay(steps))',
           'torch._foreach_lerp_(list(averaged), list(sources), 1.0 - self.decay(steps + 1))',
           EMA_TESTS),
    Mutant('ema-fused-update-keeps-old-buffers', EMA,
           '            self.sync_buffers(model)\n        self.steps += 1',
           '            pass\n        self.steps += 1', EMA_TESTS),
    Mutant('ema-before-start-not-copied', EMA,
           'average.module.load_state_dict(source.state_dict())', 'return',
           (f'{EMA_OPTION_TESTS}::test_distiller_takes_any_mmengine_average', )),
    Mutant('train-returns-early-on-mode-alone', DISTILLER,
           'if self.training == mode and self._modes_left == module_modes(self):',
           'if self.training == mode and self._modes_left is not None:',
           ('tests/test_models/test_distillers/test_diffusion_distiller.py'
            '::test_train_returns_at_once_only_when_nothing_changed', )),
    # the pruning record and the shape checks built on it
    Mutant('record-history-flag', RECORD,
           'plain.append([str(module_name), bool(is_out), [int(i) for i in idxs]])',
           'plain.append([str(module_name), not bool(is_out), [int(i) for i in idxs]])',
           ('tests/test_pruning/test_structural.py::test_importances_prune_and_rebuild', )),
    Mutant('record-shapes-unchecked', STATE_DICT, 'elif list(actual[name]) != list(shape):',
           'elif False:',
           ('tests/test_pruning/test_structural.py::test_record_mismatch_errors',
            'tests/test_models/test_distillers/test_strict_loads.py')),
    Mutant('distiller-load-unchecked', DISTILLER,
           "check_shapes(expected, state_dict, prefix=prefix, what='The checkpoint')",
           'expected = None',
           ('tests/test_models/test_distillers/test_strict_loads.py', )),
    # the channel order of generated samples
    Mutant('preprocessor-output-order', PREPROCESSOR,
           'data_samples = DataSample(metainfo={order_key: self.output_channel_order})',
           "data_samples = DataSample(metainfo={order_key: 'BGR'})",
           ('tests/test_models/test_data_preprocessors/test_diffusion_data_preprocessor.py', )),
    # the data samples stacked without MMagic's copies: the same fields, values owned
    Mutant('preprocessor-stacks-first-sample-metainfo', PREPROCESSOR,
           "stacked.set_field(values, name, field_type='metainfo')",
           "stacked.set_field(values[:1], name, field_type='metainfo')",
           ('tests/test_models/test_data_preprocessors/test_diffusion_data_preprocessor.py'
            '::test_data_samples_are_mmagics_field_for_field', )),
    Mutant('preprocessor-shares-mean-buffer', PREPROCESSOR,
           "(f'{key}_mean', _clone(self.mean)),", "(f'{key}_mean', self.mean),",
           ('tests/test_models/test_data_preprocessors/test_diffusion_data_preprocessor.py'
            '::test_stacked_metainfo_owns_its_values', )),
    # the distiller's regression targets and reduction
    Mutant('target-epsilon', NOISE_SCHEDULE,
           "if prediction_type == 'epsilon':\n        return noise",
           "if prediction_type == 'epsilon':\n        return x_0", CLOSED_FORMS),
    Mutant('target-sample', NOISE_SCHEDULE,
           "if prediction_type == 'sample':\n        return x_0",
           "if prediction_type == 'sample':\n        return noise", CLOSED_FORMS),
    Mutant('target-v-prediction', NOISE_SCHEDULE,
           'return scheduler.get_velocity(x_0, noise, timesteps)', 'return noise',
           ('tests/test_models/test_distillers/test_diffusion_distiller.py::'
            'test_sd_v_prediction_target_and_text_conditioning', )),
    Mutant('target-kd-self', KD, "pred_T='teacher_out')", "pred_T='student_out')",
           CLOSED_FORMS),
    # feature distillation: the kept channels of a width-pruned student, the points, the
    # rows of a sub-batch forward, the mask
    Mutant('feature-kept-first-channels', FEATURE_POINTS, 'index = rows.round().long()',
           'index = torch.arange(n_s)', FEATURE_TESTS),
    Mutant('feature-tiny-up-offset', FEATURE_POINTS, 'offset = n_up_t - n_up_s',
           'offset = 0', FEATURE_TESTS),
    Mutant('feature-rows-unordered', RECORDER, 'out[name] = values[first]',
           'out[name] = values[:batch]', LOSS_SET_TESTS),
    Mutant('feature-mask-student-only', FEATURE_KD,
           'mask = (_within_sigma(teacher, self.mask_sigma)',
           'mask = (_within_sigma(student.detach(), self.mask_sigma)', FEATURE_TESTS),
    Mutant('dsm-pixel-mean', SQUARED_ERROR, 'return sq_err.flatten(1).sum(1).mean()',
           'return sq_err.flatten(1).mean(1).mean()', CLOSED_FORMS),
    # the non-finite step guard
    Mutant('guard-never-skips', STEP_GUARD, 'skip = bool(self.window_nonfinite) and update',
           'skip = False', GUARD_TESTS),
    Mutant('guard-rank-local', STEP_GUARD, "all_reduce(flags, op='max')", 'flags = flags',
           ('tests/test_distributed/test_nonfinite_guard_ddp.py', )),
    Mutant('guard-gradient-2-norm', STEP_GUARD, "torch._foreach_norm(grads, float('inf'))",
           'torch._foreach_norm(grads, 2)', GUARD_TESTS),
    # depth pruning: the one-shot criteria, the learnable search, the record and its replay
    Mutant('depth-keep-least-important', DEPTH,
           'ranked = sorted(group, key=lambda i: (-scores[i], i))',
           'ranked = sorted(group, key=lambda i: (scores[i], i))',
           (f'{DEPTH_TESTS}::test_one_shot_selectors_drop_the_identity_block_first', )),
    Mutant('depth-cosine-similarity-not-change', DEPTH,
           'totals[index] += float((1.0 - cos).sum())', 'totals[index] += float(cos.sum())',
           (f'{DEPTH_TESTS}::test_one_shot_selectors_drop_the_identity_block_first', )),
    Mutant('depth-learnable-argmin', DEPTH, 'best = logits.detach().argmax(dim=1).tolist()',
           'best = logits.detach().argmin(dim=1).tolist()',
           (f'{DEPTH_TESTS}::test_learnable_search_picks_the_clearly_best_pattern', )),
    Mutant('depth-search-keeps-trained-weights', DEPTH, 'net.load_state_dict(snapshot)',
           'snapshot = None',
           (f'{DEPTH_TESTS}::test_learnable_search_picks_the_clearly_best_pattern', )),
    Mutant('record-depth-index-bound', RECORD, 'kept[0] < 0 or kept[-1] >= num_blocks',
           'kept[0] < 0 or kept[-1] > num_blocks', (f'{DEPTH_TESTS}::test_depth_errors', )),
    Mutant('prune-scale-shift-chunks-unmapped', STRUCTURAL,
           'pruner.out_channel_groups.update(_split_channel_groups(pruner))', 'pass',
           (f'{STRUCTURAL_TESTS}::test_scale_shift_resnets_keep_whole_norm_groups_in_both_chunks',
            f'{STRUCTURAL_TESTS}::test_mmagic_denoising_unet_scale_shift_norm')),
    Mutant('prune-group-norm-check-off', RULES,
           '        if isinstance(module, nn.GroupNorm) and module.weight is not None and',
           '        if False and isinstance(module, nn.GroupNorm) and',
           (f'{STRUCTURAL_TESTS}::test_group_norm_check_names_the_broken_norm', )),
    Mutant('rebuild-skips-depth', STRUCTURAL,
           "if record.get('depth') is not None:  # depth first", 'if False:  # depth first',
           (f'{DEPTH_TESTS}::test_depth_and_width_records_rebuild_the_same_model', )),
    # strict weight loads: a missing or extra key raises on every path
    Mutant('distiller-load-keys-unchecked', DISTILLER,
           "check_keys(expected, state_dict, prefix=prefix, what='The checkpoint',",
           "(lambda *a, **k: None)(expected, state_dict, prefix=prefix, what='x',",
           (f'{LOAD_TESTS}::test_distiller_refuses_missing_and_extra_keys_on_a_lenient_load', )),
    Mutant('check-keys-ignores-unexpected', STATE_DICT,
           'missing, unexpected = sorted(expected - found), sorted(found - expected)',
           'missing, unexpected = sorted(expected - found), []',
           (f'{LOAD_TESTS}::test_check_keys_names_missing_and_unexpected', )),
    Mutant('pretrained-missing-ignored', STATE_DICT,
           "'missing': list(info.get('missing_keys') or []),", "'missing': [],",
           (f'{LOAD_TESTS}::test_transformers_folders_refuse_missing_and_extra_keys', )),
    Mutant('class-table-extra-keys', CLASS_EMBEDDER,
           "extra = sorted(key for key in state if key != 'embedding.weight')", 'extra = []',
           (f'{LOAD_TESTS}::test_class_table_refuses_missing_and_extra_keys', )),
    # options that were ignorable with every test green (tests/options_inventory.py)
    Mutant('ema-interval-ignored', EMA, 'momentum=momentum, interval=interval,',
           'momentum=momentum, interval=1,',
           (f'{EMA_OPTION_TESTS}::test_interval_skips_the_updates_between', )),
    Mutant('ema-update-buffers-ignored', EMA, 'update_buffers=update_buffers)',
           'update_buffers=False)',
           (f'{EMA_OPTION_TESTS}::test_update_buffers_averages_the_buffers', )),
    Mutant('loss-safe-kernels-ignored', LOSS, 'if self.safe_kernels else contextlib.nullcontext()',
           'if True else contextlib.nullcontext()',
           ('tests/test_models/test_losses/test_second_order_match_loss.py::'
            'test_safe_kernels_switches_the_students_vjp_pass', )),
    Mutant('feature-block-map-ignored', FEATURE_KD, 'self.block_map = block_map',
           "self.block_map = 'auto'",
           ('tests/test_models/test_losses/test_feature_kd_loss.py::'
            'test_block_map_picks_the_teacher_blocks', )),
    Mutant('sampler-sample-with-ema-ignored', SAMPLER,
           "sample_model = 'ema' if (self.sample_with_ema and ema is not None) else 'orig'",
           "sample_model = 'ema' if ema is not None else 'orig'",
           ('tests/test_models/test_distillers/test_distiller_options.py', )),
    Mutant('sampler-shape-ignored', SAMPLER,
           'self.sample_shape = tuple(sample_shape) if sample_shape else None',
           'self.sample_shape = None',
           ('tests/test_models/test_distillers/test_distiller_options.py', )),
    Mutant('vis-seed-ignored', VIS_HOOK, 'self.seed = int(seed)', 'self.seed = 0', VIS_TESTS),
    Mutant('vis-n-row-ignored', VIS_HOOK, 'n_row = self.n_row or self.n_samples',
           'n_row = self.n_samples', VIS_TESTS),
    Mutant('progress-enabled-ignored', PROGRESS_HOOK, 'self.enabled = bool(enabled)',
           'self.enabled = True',
           ('tests/test_engine/test_hooks/test_sampling_progress_hook.py', )),
    Mutant('pruning-hook-ema-key-ignored', PRUNING_HOOK, 'self.ema_key = ema_key',
           "self.ema_key = 'student_ema'",
           ('tests/test_engine/test_hooks/test_pruning_hook.py::'
            'test_hook_options_reach_the_pruning', )),
    Mutant('digits-train-size-ignored', DIGITS, 'self.train_size = train_size',
           'self.train_size = 1500', ('tests/test_datasets/test_digits_dataset.py', )),
    Mutant('coco-captions-per-image-ignored', COCO,
           'kept = captions.get(image_id, [])[:self.captions_per_image]',
           'kept = captions.get(image_id, [])',
           ('tests/test_datasets/test_coco_caption_dataset.py', )),
    # the last untested options (#23 part 8) and the seed bug their tests found
    Mutant('index-seed-truncated', INFERENCE,
           'return (int(index) + int(seed) * SEED_STRIDE) & 0xFFFFFFFF',
           'return ((int(seed) << 32) + int(index)) & 0xFFFFFFFF',
           (f'{LOAD_TESTS}::test_index_noise_seed',
            f'{TOOL_TESTS}::test_sample_to_folder_seed_draws_the_noise')),
    Mutant('sample-grid-size-ignored', INFERENCE, '_write_grid(paths[:grid_size],',
           '_write_grid(paths[:64],',
           (f'{TOOL_TESTS}::test_sample_to_folder_grid_size_caps_the_grid', )),
    Mutant('sample-guidance-ignored', INFERENCE,
           "sample_kwargs['guidance_scale'] = float(guidance_scale)",
           "sample_kwargs['guidance_scale'] = 1.0",
           (f'{TOOL_TESTS}::test_sample_to_folder_guidance_scale', )),
    Mutant('sample-prompts-ignored', INFERENCE,
           'conditions = _conditions(model, num, labels, prompts)',
           'conditions = _conditions(model, num, labels, None)',
           (f'{TOOL_TESTS}::test_sample_to_folder_cycles_prompts', )),
    Mutant('export-progress-ignored', EXPORT, 'disable=not progress)', 'disable=False)',
           (f'{TOOL_TESTS}::test_export_student_progress', )),
    Mutant('recorder-detach-ignored', RECORDER, 'if self.detach:', 'if False:',
           ('tests/test_models/test_losses/test_feature_kd_loss.py::'
            'test_recorder_detach_cuts_the_graph', )),
    Mutant('pruning-hook-prune-cfg-ignored', PRUNING_HOOK,
           'dict(ratio=ratio, importance=importance, **prune_cfg)',
           'dict(ratio=ratio, importance=importance)',
           ('tests/test_engine/test_hooks/test_pruning_hook.py::'
            'test_hook_options_reach_the_pruning', )),
    # the regime map's pairing, follow-up and depth levels
    Mutant('record-hash-ignores-depth', STUDY_EVALUATION, 'kept = [kept, record[\'depth\']]',
           'kept = kept', ('tests/test_studies/test_digits/test_evaluation.py::'
                           'test_record_hash_tells_kept_blocks_and_channels_apart', )),
    Mutant('follow-up-near-ignored', FOLLOW_UP,
           'if high > low and min(-low, high) <= margin * (high - low):', 'if False:',
           (f'{MAP_TESTS}/test_map_followup.py::test_interval_flag_and_target_seeds', )),
    Mutant('map-depth-group-swapped', MAP_AXES,
           "f'custom_hooks.0.depth_cfg.group_size={group}'",
           "f'custom_hooks.0.depth_cfg.group_size={keep}'",
           (f'{MAP_TESTS}/test_map_axes.py', )),
    Mutant('map-stale-run-kept', MAP_DRIVER, 'if stored != now:', 'if False:',
           (f'{MAP_TESTS}/test_map_axes.py::'
            'test_a_done_run_with_other_options_than_today_stops_the_screen', )),
    Mutant('timing-same-order-every-round', MAP_TIMING, 'shift = r % len(names)', 'shift = 0',
           (f'{MAP_TESTS}/test_map_timing.py', )),
    Mutant('loss-terms-killed-sitting-wins', STUDY_RUNS,
           "if 'step' in record and 'loss' in record:",
           "if 'step' in record and 'loss' in record and int(record['step']) not in by_step:",
           ('tests/test_studies/test_digits/test_runs.py::test_loss_terms_of_a_resumed_run', )),
    Mutant('combine-follow-up-seeds-counted', MAP_COMBINE, 'if s in seeds}', 'if True}',
           (f'{MAP_TESTS}/test_map_combine.py', )),
    Mutant('combine-tie-to-the-higher-fid', MAP_COMBINE,
           'min(tied, key=lambda s: s.fid_pct)', 'max(tied, key=lambda s: s.fid_pct)',
           (f'{MAP_TESTS}/test_map_combine.py', )),
    Mutant('map-feature-schedule-fixed', MAP_AXES, 'option.format(iters=iters)',
           'option.format(iters=7500)',
           (f'{MAP_TESTS}/test_map_axes.py::'
            'test_the_dit_map_trains_a_dit_teacher_and_depth_prunes_its_students', )),
    Mutant('t-interval-n-dof', STUDY_STATISTICS, 'confidence / 2, values.size - 1)',
           'confidence / 2, values.size)',
           ('tests/test_studies/test_digits/test_statistics.py::test_t_interval_closed_form', )),
    Mutant('study-interval-is-the-seed-range', STUDY_STATISTICS,
           'out[key] = t_interval(diffs)',
           'out[key] = (float(np.mean(diffs)), min(diffs), max(diffs))',
           ('tests/test_studies/test_digits/test_statistics.py::'
            'test_paired_differences_use_t_intervals_over_the_paired_seeds', )),
    Mutant('holm-is-bonferroni', STUDY_STATISTICS,
           'running = max(running, min(1.0, (tested.size - rank) * p[index]))',
           'running = min(1.0, tested.size * p[index])',
           ('tests/test_studies/test_digits/test_statistics.py::test_holm_closed_form', )),
    Mutant('holm-counts-untested-cells', STUDY_STATISTICS,
           'tested = np.flatnonzero(np.isfinite(p))', 'tested = np.arange(p.size)',
           ('tests/test_studies/test_digits/test_statistics.py::test_holm_closed_form', )),
    Mutant('t-test-one-sided', STUDY_STATISTICS,
           'return float(2.0 * stats.t.sf(abs(t), values.size - 1))',
           'return float(stats.t.sf(abs(t), values.size - 1))',
           ('tests/test_studies/test_digits/test_statistics.py::'
            'test_t_test_p_closed_form_and_its_interval', )),
    Mutant('holm-family-includes-the-reference', MAP_CELLS,
           'if reference_of(recipe) != recipe]', ']',
           (f'{MAP_TESTS}/test_map_report.py::test_holm_adjusts_over_the_panels_cells', )),
    Mutant('heatmap-star-ignores-holm', MAP_REPORT,
           "family_wise = adjusted[(levels[i], columns[j])] < 0.05", 'family_wise = True',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_report_and_heatmap_tell_family_wise_verdicts_apart', )),
    Mutant('study-table-unadjusted', 'mmdiff_2ndm/studies/digits/report.py',
           "adjusted = dict(zip(family, holm([paired[name][f'{k}_p'] for name, k in family])))",
           "adjusted = {(name, k): paired[name][f'{k}_p'] for name, k in family}",
           ('tests/test_studies/test_digits/test_statistics.py::'
            'test_paired_table_adjusts_every_verdict_for_the_whole_table', )),
    Mutant('archived-twin-ignores-options', MAP_DRIVER,
           "and _without_teacher_path(data.get('options', [])) == wanted):", '):',
           (f'{MAP_TESTS}/test_map_lengths.py::test_a_half_length_run_adopts_its_archived_twin', )),
    Mutant('adopted-twin-keeps-its-recipe', MAP_DRIVER, 'data.update(recipe=run[1], ',
           "data.update(recipe=data['recipe'], ",
           (f'{MAP_TESTS}/test_map_lengths.py::test_a_half_length_run_adopts_its_archived_twin', )),
    Mutant('same-length-ignores-the-length', MAP_REPORT,
           "and data.get('iters') == cell[seed]['iters']):", '):',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_half_length_recipes_against_the_reference_at_their_length', )),
    Mutant('teacher-digest-names-only', MAP_TEACHER,
           'digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())', 'pass',
           (f'{MAP_TESTS}/test_map_teacher_file.py', )),
    Mutant('heatmap-undecided-full-colour', MAP_REPORT,
           'alpha = np.where(verdicts, 1.0, UNDECIDED_ALPHA)[..., None]',
           'alpha = np.ones_like(verdicts, dtype=float)[..., None]',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_heatmap_colours_pale_where_the_interval_holds_zero', )),
    Mutant('heatmap-fid-colour-absolute', MAP_REPORT,
           "coloured_by = table if key != 'fid' else [", 'coloured_by = table if True else [',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_heatmap_colours_proxy_fid_in_percent_of_the_reference', )),
    Mutant('map-length-ignored', MAP_AXES,
           "round(RECIPES[recipe].length * finetune_iters * preset['batch_size'] / batch)",
           "round(finetune_iters * preset['batch_size'] / batch)",
           (f'{MAP_TESTS}/test_map_axes.py::'
            'test_the_length_check_trains_dsm_kd_twice_as_long_at_every_level',
            f'{MAP_TESTS}/test_map_axes.py::'
            'test_the_budget_trains_each_2ndm_form_half_as_long_as_its_full_run')),
    Mutant('half-length-run-not-timed-as-its-full-recipe', MAP_SCHEDULE,
           'training_step(RECIPES[name]) == step), None)',
           'training_step(RECIPES[name]) == step and False), None)',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_cost_of_a_half_length_run_at_the_references_wall_clock',
            f'{MAP_TESTS}/test_map_report.py::'
            'test_remaining_training_is_estimated_from_logged_and_timed_iterations',
            f'{MAP_TESTS}/test_map_schedule.py')),
    Mutant('halfway-checkpoint-shown-as-final', MAP_REPORT,
           'return dict(iters=iters, final=final, **scores',
           'return dict(iters=iters, final=True, **scores',
           (f'{MAP_TESTS}/test_map_report.py::test_cost_at_the_references_wall_clock',
            f'{MAP_TESTS}/test_map_report.py::'
            'test_cost_of_a_half_length_run_at_the_references_wall_clock')),
    Mutant('map-length-verdict-sign', MAP_LENGTHS, 'past_tol = change < -tol',
           'past_tol = change > tol',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_length_check_names_the_levels_a_longer_run_still_improves',
            f'{MAP_TESTS}/test_map_lengths.py::'
            'test_length_check_is_the_mean_relative_change_over_common_seeds')),
    Mutant('length-check-ignores-noise', MAP_LENGTHS,
           'longer_needed = past_tol and drop > NOISE_SDS * noise', 'longer_needed = past_tol',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_length_check_is_the_mean_relative_change_over_common_seeds', )),
    Mutant('lengthen-forgets-earlier-doublings', MAP_LENGTHS,
           'history = [] if earlier is None else [', 'history = [] if True else [',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_converge_doubles_each_level_until_its_check_passes_or_reaches_the_cap', )),
    Mutant('converge-stops-after-one-check', MAP_DRIVER,
           'todo = [level for level in grown if doublings[level] < max_doublings]', 'todo = []',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_converge_doubles_each_level_until_its_check_passes_or_reaches_the_cap', )),
    Mutant('converge-checks-past-the-cap', MAP_DRIVER,
           'if check_past_cap(self.finetune_iters(level), cap)]', 'if False]',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_converge_doubles_each_level_until_its_check_passes_or_reaches_the_cap', )),
    Mutant('lengthen-past-the-cap', MAP_LENGTHS,
           'capped=past_tol and cap is not None and iters_long > cap)', 'capped=False)',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_lengthen_refuses_a_level_that_passed_and_a_second_archive', )),
    Mutant('undecided-check-past-the-cap-asks-for-seeds', MAP_LENGTHS,
           'capped=past_tol and cap is not None and iters_long > cap)',
           'capped=longer_needed and cap is not None and iters_long > cap)',
           (f'{MAP_TESTS}/test_map_lengths.py', )),
    Mutant('length-check-seeds-interval-is-the-range', MAP_LENGTHS,
           "change, change_low, change_high = t_interval([b / a - 1.0 for a, b in zip(fid, "
           "fid_long)])",
           "change, change_low, change_high = (lambda v: (float(np.mean(v)), min(v), max(v)))("
           "[b / a - 1.0 for a, b in zip(fid, fid_long)])",
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_length_check_is_the_mean_relative_change_over_common_seeds', )),
    Mutant('screen-trains-checks-past-the-cap', MAP_DRIVER,
           'return [run for run in runs if run not in past]', 'return list(runs)',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_converge_doubles_each_level_until_its_check_passes_or_reaches_the_cap', )),
    Mutant('report-plans-checks-past-the-cap', MAP_REPORT,
           'planned = [run for run in planned if run not in past]', 'planned = list(planned)',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_converge_doubles_each_level_until_its_check_passes_or_reaches_the_cap', )),
    Mutant('heatmap-legend-not-wrapped-to-the-figure', MAP_REPORT,
           'textwrap.fill(legend, int(13 * width))', 'textwrap.fill(legend, 150)',
           (f'{MAP_TESTS}/test_map_report.py::test_heatmap_legend_fits_the_figure', )),
    Mutant('remaining-ignores-the-timed-ratio', MAP_SCHEDULE,
           'return float(np.median(reference)) * ratios[recipe]',
           'return float(np.median(reference))',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_remaining_training_is_estimated_from_logged_and_timed_iterations',
            f'{MAP_TESTS}/test_map_schedule.py')),
    Mutant('map-drops-the-halfway-checkpoint', MAP_DRIVER,
           'drop_checkpoints(run_dir, keep=(halfway_iter(iters), iters))',
           'drop_checkpoints(run_dir, keep=(iters, ))',
           (f'{MAP_TESTS}/test_map_tool.py::test_tiny_map_end_to_end_and_resume', )),
    Mutant('map-level-length-ignored', MAP_DRIVER, 'if level is not None and level in lengths:',
           'if False:',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_lengthen_archives_the_level_and_adopts_the_longer_runs', )),
    Mutant('lengthen-keeps-the-longer-recipe', MAP_LENGTHS,
           'data.update(recipe=REFERENCE, finetune_iters=new_iters, adopted_from=longer)',
           'data.update(finetune_iters=new_iters, adopted_from=longer)',
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_lengthen_archives_the_level_and_adopts_the_longer_runs', )),
    Mutant('map-step-reports-its-own-preset', 'tools/regime_map.py',
           "name, cells = 'screen', index_runs(runs)", 'cells = index_runs(runs)',
           (f'{MAP_TESTS}/test_map_tool_report.py', )),
    Mutant('undecided-length-check-plans-one-seed-more', MAP_LENGTHS,
           "min(MAX_SEEDS, len(check['seeds']) + 2)", "min(MAX_SEEDS, len(check['seeds']) + 1)",
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_length_check_is_the_mean_relative_change_over_common_seeds', )),
    Mutant('undecided-length-check-asks-past-pending-seeds', MAP_LENGTHS,
           "    if check['pending']:\n", "    if False:\n",
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_an_undecided_check_finishes_its_pending_seeds_before_asking_for_more', )),
    Mutant('undecided-length-check-without-seed-limit', MAP_LENGTHS,
           "min(MAX_SEEDS, len(check['seeds']) + 2)", "len(check['seeds']) + 2",
           (f'{MAP_TESTS}/test_map_lengths.py::'
            'test_an_undecided_check_finishes_its_pending_seeds_before_asking_for_more', )),
    Mutant('evaluated-runs-not-counted-as-planned', MAP_REPORT,
           'samplers[0], cap=cap) + sorted(done)))', 'samplers[0], cap=cap)))',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_report_lists_done_runs_and_writes_heatmaps', )),
    Mutant('remaining-leaves-out-the-longer-reference', MAP_SCHEDULE,
           'ratios = {REFERENCE: 1.0}', 'ratios = {}',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_remaining_training_is_estimated_from_logged_and_timed_iterations',
            f'{MAP_TESTS}/test_map_schedule.py')),
    Mutant('until-trains-a-resumed-run-from-the-start', MAP_SCHEDULE,
           'max(iters - trained, 0) * per_iter', 'iters * per_iter',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('until-leaves-out-the-scoring', MAP_DRIVER,
           'timedelta(seconds=sum(estimate))', 'timedelta(seconds=estimate[0])',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('until-starts-a-run-it-cannot-estimate', MAP_DRIVER,
           "                '--until)')\n            return False",
           "                '--until)')\n            return True",
           (f'{MAP_TESTS}/test_map_schedule.py',
            f'{MAP_TESTS}/test_map_tool.py::test_tiny_map_end_to_end_and_resume')),
    Mutant('screen-scores-a-run-left-for-later', MAP_DRIVER,
           'if future.result() is None:\n                    continue  # left for a later',
           'if False:\n                    continue  # left for a later',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('timing-needs-the-recipes-own-run', MAP_DRIVER,
           'for source in self._timing_sources(recipe, recipes):', 'for source in [recipe]:',
           (f'{MAP_TESTS}/test_map_timing.py', )),
    Mutant('timing-without-the-references', MAP_CELLS,
           'while chain[-1] != REFERENCE:', 'while False:',
           (f'{MAP_TESTS}/test_map_timing.py', )),
    Mutant('overrun-starts-where-no-checkpoint-comes-in-time', MAP_DRIVER,
           'if needed is None or needed > left:', 'if needed is None:',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('overrun-ignores-the-partly-trained', MAP_DRIVER,
           'ordered = sorted(runs, key=lambda run: -trained_iters(self.run_dir(run)))',
           'ordered = list(runs)',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('overrun-scores-a-stopped-run', MAP_DRIVER,
           "at --until: {stop}')\n                return None",
           "at --until: {stop}')\n                return 0.0",
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('fitting-run-trains-past-until', MAP_DRIVER,
           'return self.train_run(run, deadline=None if self.until is None',
           'return self.train_run(run, deadline=None if True',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('screen-parks-nothing', MAP_DRIVER,
           '        self.park_stopped(todo)\n', '',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('screen-restores-nothing', MAP_DRIVER,
           '        self.restore_parked(todo)\n', '',
           (f'{MAP_TESTS}/test_map_schedule.py', )),
    Mutant('park-drops-the-halfway-checkpoint', MAP_PARKING,
           'for n in (half, held)', 'for n in (held, )',
           (f'{MAP_TESTS}/test_map_parking.py', )),
    Mutant('to-go-counts-parked-iterations', MAP_REPORT,
           '        iters -= min(iters, parked.get((level, recipe, seed), 0))\n', '',
           (f'{MAP_TESTS}/test_map_report.py::'
            'test_remaining_training_is_estimated_from_logged_and_timed_iterations', )),
    Mutant('park-keeps-the-halfway-resume-state', MAP_PARKING,
           'torch.save({key: ckpt[key] for key in SCORED_PARTS if key in ckpt},',
           'torch.save(ckpt,',
           (f'{MAP_TESTS}/test_map_parking.py', )),
    Mutant('park-parks-no-progress-again', MAP_PARKING,
           ' or held <= parked_iters(pending_dir):', ':',
           (f'{MAP_TESTS}/test_map_parking.py', )),
    Mutant('restore-ignores-changed-options', MAP_PARKING,
           "if record['iters'] != iters or record['options'] != options:",
           "if record['iters'] != iters:",
           (f'{MAP_TESTS}/test_map_parking.py', )),
    Mutant('restore-leaves-resume-pointer-stale', MAP_PARKING,
           '        f.write(latest)',
           '        f.write(osp.join(pending_dir, osp.basename(latest)))',
           (f'{MAP_TESTS}/test_map_parking.py', )),
    Mutant('training-ignores-its-deadline', STUDY_RUNS,
           'returncode = run_until(cmd, deadline,', 'returncode = run_until(cmd, None,',
           ('tests/test_studies/test_digits/test_runs.py', )),
    Mutant('data-set-map-plans-every-level', MAP_AXES,
           'if scope is not None and name in MAP_PRESETS:', 'if False:',
           (f'{MAP_TESTS}/test_map_axes.py::test_a_data_sets_map_covers_its_levels',
            f'{MAP_TESTS}/test_map_tool_report.py')),
]


def check_mutant(mutant: Mutant, root: str = REPO) -> str:
    """Returns the source text of the mutant's file after checking the mutant applies.

    Raises:
        ValueError: If ``before`` does not occur exactly once, or equals ``after``.
    """
    with open(osp.join(root, mutant.path), encoding='utf-8') as f:
        source = f.read()
    count = source.count(mutant.before)
    if count != 1:
        raise ValueError(f'Mutant {mutant.name!r}: its text occurs {count} times in '
                         f'{mutant.path} (must be once); update it to the current code: '
                         f'{mutant.before!r}')
    if mutant.before == mutant.after:
        raise ValueError(f'Mutant {mutant.name!r} changes nothing.')
    return source


def _write_source(path: str, text: str) -> None:
    """Writes ``text`` and drops the file's cached bytecode (``.pyc`` validation by mtime
    and size could keep a stale one when both match)."""
    with open(path, 'w', encoding='utf-8') as f:
        f.write(text)
    with contextlib.suppress(FileNotFoundError):
        os.remove(importlib.util.cache_from_source(path))


@contextlib.contextmanager
def applied(mutant: Mutant, root: str = REPO) -> Iterator[None]:
    """Applies the mutant for the duration of the block; the file is always restored."""
    path = osp.join(root, mutant.path)
    source = check_mutant(mutant, root)
    try:
        _write_source(path, source.replace(mutant.before, mutant.after))
        yield
    finally:
        _write_source(path, source)


def run_tests(tests: Sequence[str], timeout: float) -> Tuple[int, str]:
    """Runs pytest on ``tests`` (stop at the first failure); returns (status, output tail)."""
    env = dict(os.environ)
    env.setdefault('OMP_NUM_THREADS', '1')
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f'timed out after {timeout:.0f} s'
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:]


def _raise_interrupt(signum, frame):
    """SIGTERM -> KeyboardInterrupt, so that ``applied`` restores the file."""
    raise KeyboardInterrupt(f'signal {signum}')


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', nargs='+', metavar='NAME', help='run these mutants only')
    parser.add_argument('--list', action='store_true', help='list the mutants and exit')
    parser.add_argument('--timeout', type=float, default=900,
                        help='seconds per mutant before it counts as an error')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [m.name for m in MUTANTS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        raise SystemExit(f'Unknown mutant(s) {unknown}; choose from {names}.')
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    for mutant in mutants:  # every mutant must apply before any file is touched
        check_mutant(mutant)
    if args.list:
        for m in mutants:
            print(f'{m.name:32s} {m.path}\n{"":32s} tests: {" ".join(m.tests)}')
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    survived, errors = [], []
    for index, mutant in enumerate(mutants, 1):
        start = time.time()
        with applied(mutant):
            status, tail = run_tests(mutant.tests, args.timeout)
        verdict = {0: 'SURVIVED', 1: 'caught'}.get(status, f'ERROR (status {status})')
        print(f'[{index:2d}/{len(mutants)}] {mutant.name:32s} {verdict:18s} '
              f'{time.time() - start:5.1f} s', flush=True)
        if status == 0:
            survived.append(mutant.name)
        elif status != 1:
            errors.append(mutant.name)
            print(tail)
    caught = len(mutants) - len(survived) - len(errors)
    print(f'caught {caught} / {len(mutants)} mutants'
          + (f'; survived: {", ".join(survived)}' if survived else '')
          + (f'; errors: {", ".join(errors)}' if errors else ''))
    return 2 if errors else int(bool(survived))


if __name__ == '__main__':
    sys.exit(main())
