"""The option audit: every constructor argument of the public classes and every parameter
of ``mmdiff_2ndm.apis``, with the test that fails when the option is ignored.

Public: what ``mmdiff_2ndm`` registers (MODELS, HOOKS, METRICS, DATASETS), the distiller's
collaborators (:data:`COLLABORATORS`) and ``mmdiff_2ndm.apis.__all__``. An option is its
class's own ``__init__`` parameter (``self`` left out), or, for a class that adds no
constructor, each ``Args:`` entry of its docstring (MMagic's own keywords stay MMagic's).
``tests/test_options_inventory.py`` fails when a public option has no entry here or an
entry names a test that does not exist.

``OPTIONS[owner][option]`` is a pytest path or node id; None marks an untested option.
Options in :data:`BY_READING` were judged covered by reading the test; every other one
was checked by ignoring it (dropped at construction, i.e. replaced by its default, with
``inspect.signature(...).bind``) and seeing the named test fail, or has a test written for
it. What is left there are required arguments, which have no default to replace them
with. Counts::

    python tests/options_inventory.py   # options tested: N / N
"""
import inspect
import re
import sys
from typing import Callable, Dict, Iterator, Optional, Tuple

L = 'tests/test_models/test_losses/'
D = 'tests/test_models/test_distillers/'
H = 'tests/test_engine/test_hooks/'
E = 'tests/test_evaluation/'
TOOLS = 'tests/test_tools/test_sample_and_export_tools.py'
APIS = 'tests/test_apis/test_load_paths.py'
OPTIONS_TEST = f'{D}test_distiller_options.py'
SCHEDULES = f'{D}test_distiller_schedules.py'
SAMPLER = f'{D}test_diffusion_distiller.py'
CLASS_COND = f'{D}test_class_embedder.py'
EMA_TESTS = 'tests/test_models/test_averaged_model.py'
VIS = f'{H}test_visualization_hook.py'
TIED = 'tests/test_distributed/test_sample_tied_noise.py'
GUARD = f'{D}test_nonfinite_guard.py'
TEXT = f'{SAMPLER}::test_sd_v_prediction_target_and_text_conditioning'
PROMPTS = f'{SAMPLER}::test_sample_prompts_cycle_across_calls'
METRIC_OPTIONS = f'{E}test_metric_options.py'

#: The distiller's collaborators, by import path.
COLLABORATORS = (
    'mmdiff_2ndm.models.distillers.sampler:DistillerSampler',
    'mmdiff_2ndm.models.distillers.conditioner:Conditioner',
    'mmdiff_2ndm.models.distillers.student_update:StepGuard',
    'mmdiff_2ndm.models.distillers.training_draws:TrainingDraws',
    'mmdiff_2ndm.models.distillers.training_state:TrainingState',
    'mmdiff_2ndm.models.sampling:LatentCodec',
    'mmdiff_2ndm.models.feature_recorder:FeatureRecorder',
)

SQUARED = dict(loss_weight=f'{L}test_dsm_kd_losses.py', reduction=f'{L}test_dsm_kd_losses.py')
OPTIONS: Dict[str, Dict[str, Optional[str]]] = {
    'DSMLoss': SQUARED,
    'KDLoss': SQUARED,
    '2ndMatchLoss': dict(
        loss_weight=f'{L}test_second_order_match_loss.py',
        num_projections=f'{L}test_second_order_match_loss.py',
        mode=f'{L}test_second_order_match_loss.py',
        reduction=f'{L}test_second_order_match_loss.py',
        batch_fraction=f'{L}test_second_order_match_loss.py',
        seed=f'{L}test_second_order_match_loss.py',
        nonfinite=f'{L}test_second_order_match_loss.py',
        safe_kernels=f'{L}test_second_order_match_loss.py::'
        'test_safe_kernels_switches_the_students_vjp_pass',
        scale=SCHEDULES, t_range=SCHEDULES, warmup_iters=SCHEDULES,
        form=f'{L}test_second_order_match_loss.py'),
    'FeatureKDLoss': dict(
        layers=f'{L}test_feature_kd_loss.py',
        block_map=f'{L}test_feature_kd_loss.py::test_block_map_picks_the_teacher_blocks',
        loss_weight=f'{L}test_feature_kd_loss.py', reduction=f'{L}test_feature_kd_loss.py',
        mask_sigma=f'{L}test_feature_kd_loss.py', weight_schedule=f'{L}test_feature_kd_loss.py',
        # ignored, 'linear' without it is refused
        schedule_iters=f'{L}test_feature_kd_loss.py', connector=f'{L}test_feature_kd_loss.py'),
    'WarmupExponentialMovingAverage': dict(
        model=EMA_TESTS, momentum=EMA_TESTS,
        interval=f'{EMA_TESTS}::test_interval_skips_the_updates_between',
        device=f'{EMA_TESTS}::test_device_places_the_average',
        update_buffers=f'{EMA_TESTS}::test_update_buffers_averages_the_buffers'),
    'BKSDMStudent': dict.fromkeys(
        ('teacher', 'variant'),
        'tests/test_models/test_block_removal.py::'
        'test_registered_builder_wraps_and_marks_initialised'),
    'ClassEmbedder': dict(num_embeddings=CLASS_COND, embed_dim=CLASS_COND,
                          checkpoint=f'{APIS}::test_class_table_refuses_missing_and_extra_keys'),
    'DiffusionDataPreprocessor': dict(
        output_channel_order='tests/test_models/test_data_preprocessors/'
        'test_diffusion_data_preprocessor.py',
        kwargs='tests/test_models/test_data_preprocessors/'
        'test_diffusion_data_preprocessor.py::test_kwargs_reach_mmagics_preprocessor'),
    'DiffusionDistiller': dict(
        teacher=SCHEDULES, noise_scheduler=SCHEDULES,
        student='tests/test_models/test_block_removal.py::'
        'test_distiller_builds_the_student_from_its_teacher',
        teacher_ckpt=f'{D}test_strict_loads.py',
        student_ckpt=f'{D}test_checkpoint_prefixes.py',
        test_scheduler=f'{TOOLS}::'
        'test_exported_sd_student_samples_like_the_distiller_in_sd_pipeline',
        num_inference_steps=f'{TOOLS}::test_export_manifest_records_every_field',
        losses=f'{D}test_open_loss_set.py',
        jacobian_scale=SCHEDULES, jacobian_t_range=SCHEDULES,
        jacobian_warmup_iters=f'{SCHEDULES}::'
        'test_deprecated_distiller_schedule_moves_into_the_loss',
        pixel_reduction=f'{L}test_dsm_kd_losses.py::'
        'test_distiller_builds_them_with_its_pixel_reduction',
        antithetic_timesteps=TIED, per_sample_noise_seed=TIED,
        ema=f'{EMA_TESTS}::test_distiller_retargets_its_warmup_ema_after_pruning',
        sample_with_ema=OPTIONS_TEST, max_consecutive_skips=GUARD,
        vae=f'{SAMPLER}::test_dit_latent_class_conditional',
        text_encoder=TEXT, tokenizer=TEXT, class_embedder=CLASS_COND,
        num_classes=f'{TOOLS}::test_export_manifest_of_a_guided_class_conditional_student',
        label_drop_prob=CLASS_COND,
        guidance_scale=f'{TOOLS}::test_export_manifest_of_a_guided_class_conditional_student',
        sample_prompts=PROMPTS, sample_shape=OPTIONS_TEST,
        data_preprocessor=f'{OPTIONS_TEST}::test_data_preprocessor_replaces_the_default',
        init_cfg=OPTIONS_TEST),
    'DiffusionPruningHook': dict(
        ratio=f'{H}test_pruning_hook.py::test_hook_options_reach_the_pruning',
        importance=f'{H}test_pruning_hook.py',
        student_key=f'{H}test_pruning_hook.py::test_hook_options_reach_the_pruning',
        ema_key=f'{H}test_pruning_hook.py::test_hook_options_reach_the_pruning',
        prune_cfg=f'{H}test_pruning_hook.py::test_hook_options_reach_the_pruning',
        method=f'{H}test_depth_pruning_hook.py', depth_cfg=f'{H}test_depth_pruning_hook.py'),
    'RNGStateHook': dict(strict=f'{H}test_rng_state_hook.py'),
    'SamplingProgressHook': dict(enabled=f'{H}test_sampling_progress_hook.py'),
    'DistillerVisualizationHook': dict(
        interval=f'{H}test_feedback_hooks.py', n_samples=f'{H}test_feedback_hooks.py',
        n_row=VIS, sample_models=VIS, num_inference_steps=VIS, seed=VIS, name=VIS,
        save_at_test=VIS, kwargs=VIS),
    'TeacherFidelity': dict(
        fake_nums=f'{E}test_teacher_fidelity.py', sample_model=METRIC_OPTIONS,
        sample_kwargs=METRIC_OPTIONS, collect_device=METRIC_OPTIONS, prefix=METRIC_OPTIONS),
    'CLIPScore': dict(
        fake_nums=f'{E}test_clip_score.py::test_rgb_order_and_fake_nums',
        clip_path=f'{E}test_clip_score.py::test_closed_form',
        sample_model=METRIC_OPTIONS, sample_kwargs=METRIC_OPTIONS,
        img_channel_order=f'{E}test_clip_score.py::test_rgb_order_and_fake_nums',
        collect_device=METRIC_OPTIONS, prefix=METRIC_OPTIONS),
    'CocoCaptionDataset': dict(
        ann_file='tests/test_datasets/test_coco_caption_dataset.py',
        data_root='tests/test_datasets/test_coco_caption_dataset.py',
        data_prefix='tests/test_datasets/test_coco_caption_dataset.py',
        captions_per_image='tests/test_datasets/test_coco_caption_dataset.py',
        kwargs='tests/test_datasets/test_coco_caption_dataset.py'),
    'SklearnDigits': dict.fromkeys(('image_size', 'split', 'train_size', 'classes', 'kwargs'),
                                   'tests/test_datasets/test_digits_dataset.py'),
    'SkimagePatches': dict.fromkeys(
        ('image_size', 'split', 'crop_size', 'patches_per_image', 'images', 'seed', 'kwargs'),
        'tests/test_datasets/test_skimage_patches_dataset.py'),
    'DistillerSampler': dict(
        test_scheduler=f'{TOOLS}::test_sd_pipeline_rewrites_a_non_sd_ddim_scheduler',
        codec=f'{SAMPLER}::test_dit_latent_class_conditional', conditioner=CLASS_COND,
        num_inference_steps=f'{TOOLS}::test_export_manifest_records_every_field',
        guidance_scale=f'{TOOLS}::test_export_manifest_of_a_guided_class_conditional_student',
        sample_with_ema=OPTIONS_TEST, sample_shape=OPTIONS_TEST),
    'Conditioner': dict(
        reference_net=CLASS_COND, nets=CLASS_COND, text_encoder=TEXT, tokenizer=TEXT,
        class_embedder=CLASS_COND,
        num_classes=f'{TOOLS}::test_export_manifest_of_a_guided_class_conditional_student',
        label_drop_prob=CLASS_COND, sample_prompts=PROMPTS),
    'StepGuard': dict(max_consecutive_skips=GUARD),
    'TrainingDraws': dict(num_train_timesteps=TIED, antithetic_timesteps=TIED),
    'TrainingState': dict(
        ema=f'{EMA_TESTS}::test_distiller_retargets_its_warmup_ema_after_pruning'),
    'LatentCodec': dict(vae=f'{SAMPLER}::test_dit_latent_class_conditional'),
    'FeatureRecorder': dict(
        net=f'{L}test_feature_kd_loss.py', names=f'{L}test_feature_kd_loss.py',
        detach=f'{L}test_feature_kd_loss.py::test_recorder_detach_cuts_the_graph'),
    'init_distiller': dict(
        config=f'{TOOLS}::test_init_distiller_rebuilds_the_pruned_run',
        checkpoint=f'{TOOLS}::test_init_distiller_rebuilds_the_pruned_run',
        device=f'{APIS}::test_init_distiller_options',
        cfg_options=f'{APIS}::test_init_distiller_options'),
    'sample_to_folder': dict(
        model=f'{TOOLS}::test_sample_tool_writes_resumable_pngs',
        out_dir=f'{TOOLS}::test_sample_tool_writes_resumable_pngs',
        num=f'{TOOLS}::test_sample_tool_writes_resumable_pngs',
        sample_model=f'{TOOLS}::test_sample_tool_writes_resumable_pngs',
        batch_size=f'{TOOLS}::test_sample_to_folder_batch_size_changes_the_calls_not_the_images',
        seed=f'{TOOLS}::test_sample_to_folder_seed_draws_the_noise',
        num_inference_steps=f'{TOOLS}::test_sample_tool_writes_resumable_pngs',
        guidance_scale=f'{TOOLS}::test_sample_to_folder_guidance_scale',
        labels=f'{TOOLS}::test_sample_tool_cycles_class_labels',
        prompts=f'{TOOLS}::test_sample_to_folder_cycles_prompts',
        grid_size=f'{TOOLS}::test_sample_to_folder_grid_size_caps_the_grid',
        progress=f'{TOOLS}::test_sample_to_folder_seed_draws_the_noise'),
    'index_noise': dict(index=f'{APIS}::test_index_noise_seed',
                        shape=f'{APIS}::test_index_noise_seed',
                        seed=f'{APIS}::test_index_noise_seed'),
    'export_student': dict(
        model=f'{TOOLS}::test_export_of_the_raw_student',
        out_dir=f'{TOOLS}::test_export_of_the_raw_student',
        record=f'{TOOLS}::test_export_manifest_records_every_field',
        sample_model=f'{TOOLS}::test_export_of_the_raw_student',
        source=f'{TOOLS}::test_export_manifest_records_every_field',
        progress=f'{TOOLS}::test_export_student_progress'),
    'load_student': dict(
        folder=f'{TOOLS}::test_exported_student_samples_like_the_distiller',
        device=f'{APIS}::test_load_student_device_and_dtype',
        dtype=f'{APIS}::test_load_student_device_and_dtype'),
}

#: Options judged covered by reading the named test, not by ignoring the option: the
#: required arguments (ignoring one leaves nothing to build with).
BY_READING = {
    'DiffusionDistiller': {'teacher', 'noise_scheduler'},
    'DistillerSampler': {'test_scheduler', 'codec', 'conditioner', 'num_inference_steps',
                         'guidance_scale'},
    'Conditioner': {'reference_net', 'nets'},
    'TrainingDraws': {'num_train_timesteps'},
    'FeatureRecorder': {'net', 'names'},
    'TeacherFidelity': {'fake_nums'},
    'CLIPScore': {'fake_nums', 'clip_path'},
    'WarmupExponentialMovingAverage': {'model'},
    'init_distiller': {'config'},
    'sample_to_folder': {'model', 'out_dir', 'num'},
    'export_student': {'model', 'out_dir'},
    'load_student': {'folder'},
}


def _docstring_args(cls: type) -> Tuple[str, ...]:
    """Names in the ``Args:`` section of ``cls``' docstring (``**kwargs`` as ``kwargs``)."""
    section = (cls.__doc__ or '').split('Args:', 1)[-1] if 'Args:' in (cls.__doc__ or '') \
        else ''
    return tuple(re.findall(r'^\s{8}\**(\w+)\b.*?:', section, re.M))


def options_of(obj: Callable) -> Tuple[str, ...]:
    """The audited options of a class or function (see the module docstring)."""
    if inspect.isclass(obj) and '__init__' not in vars(obj) and \
            not any('__init__' in vars(base) and base.__module__.startswith('mmdiff_2ndm')
                    for base in obj.__mro__[1:]):
        return _docstring_args(obj)
    params = inspect.signature(obj).parameters
    return tuple(name for name in params if name != 'self')


def public_objects() -> Iterator[Tuple[str, Callable]]:
    """(name, class or function) of every public class and api function."""
    import importlib

    import mmdiff_2ndm  # noqa: F401  (registers everything)
    from mmagic.registry import DATASETS, HOOKS, METRICS, MODELS
    from mmdiff_2ndm import apis
    for registry in (MODELS, HOOKS, METRICS, DATASETS):
        for name, obj in sorted(registry.module_dict.items()):
            if getattr(obj, '__module__', '').startswith('mmdiff_2ndm'):
                yield name, obj
    for path in COLLABORATORS:
        module, _, name = path.partition(':')
        yield name, getattr(importlib.import_module(module), name)
    for name in apis.__all__:
        yield name, getattr(apis, name)


def counts() -> Tuple[int, int, int]:
    """(options with a test, options, of those tested: checked by ignoring them)."""
    entries = [(owner, option, test) for owner, options in OPTIONS.items()
               for option, test in options.items()]
    tested = [(owner, option) for owner, option, test in entries if test]
    by_ignoring = [1 for owner, option in tested
                   if option not in BY_READING.get(owner, ())]
    return len(tested), len(entries), len(by_ignoring)


if __name__ == '__main__':
    sys.path.insert(0, '.')
    tested, total, ignored = counts()
    print(f'options tested: {tested} / {total} ({ignored} checked by ignoring the option, '
          f'{tested - ignored} by reading the test)')
    for owner, options in OPTIONS.items():
        for option, test in options.items():
            if not test:
                print(f'untested: {owner}.{option}')
