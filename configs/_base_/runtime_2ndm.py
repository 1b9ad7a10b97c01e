# Runtime shared by every 2ndMatch config: MMagic's generative runtime (default_scope
# 'mmagic', MMSeparateDistributedDataParallel, MultiOptimWrapperConstructor, MultiValLoop /
# MultiTestLoop) plus the plugin import, so that `tools/train.py` and `mim train` find the
# DiffusionDistiller, 2ndMatchLoss, DiffusionPruningHook and the dataset classes.
_base_ = ['mmagic::_base_/gen_default_runtime.py']

custom_imports = dict(imports=['mmdiff_2ndm'], allow_failed_imports=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=10000, by_epoch=False,
                    max_keep_ckpts=5, save_optimizer=True),
    # Pictures while training: every `interval` iterations one grid, a row each for the
    # student, its EMA and the teacher, sampled from the same fixed noise (and labels /
    # prompts), through MMEngine's visualizer: <work_dir>/<timestamp>/vis_data/vis_image/.
    # TensorBoard (events with the scalars and the grids in the same vis_data/):
    #   --cfg-options visualizer.vis_backends.0.type=TensorboardVisBackend
    visualization=dict(type='DistillerVisualizationHook', interval=5000, n_samples=8),
    # a progress bar while validation / test sample images for FID and the other metrics
    sampling_progress=dict(type='SamplingProgressHook'))

# Distributed training (tools/dist_train.sh, tools/slurm_train.sh): MMagic's separate DDP
# wrapper around the student only. DiffusionDistiller.train_step calls the bare student
# in its Jacobian passes (DDP's reducer cannot follow forward-mode or double-backward
# products) and all-reduces the student's gradients itself, so find_unused_parameters /
# static_graph stay False. On a machine without CUDA, tools/train.py and tools/test.py
# join with gloo and set device_ids=None (mmengine would select a CUDA device).
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False,
                         find_unused_parameters=False)
# The inherited randomness=dict(seed=2022, diff_rank_seed=True) gives each rank its own RNG
# stream (keep diff_rank_seed=True: without it every rank draws the same timesteps and
# noise). tools/train.py adds RNGStateHook (each rank's torch RNG state in checkpoints), so
# --resume is bitwise exact; for 'W processes x B == 1 process x W*B' to float tolerance,
# set model.per_sample_noise_seed=<int> (noise tied to the dataset sample).
