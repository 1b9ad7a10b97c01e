# Dense teacher of the digits evidence study: plain DDPM training (DSM only, no teacher)
# of a small UNet2DModel (177k parameters; ~0.2 s per batch-32 iteration on one CPU core)
# on scikit-learn's 8x8 digits upscaled to 16x16 (the data ship inside the scikit-learn
# wheel: nothing is downloaded).
#
#   python tools/train.py configs/digits/teacher_digits16.py --work-dir work_dirs/digits/teacher
#
# The run's EMA (`student_ema.module.model.` keys of the checkpoint) is the teacher of the
# students in 2ndm_digits16*.py. tools/digits_study.py drives the whole study.
_base_ = ['../_base_/runtime_2ndm.py']

image_size = 16
unet = dict(
    type='UNet2DModel', sample_size=image_size, in_channels=3, out_channels=3,
    # 4 GroupNorm groups: 4 / 8 channels per group, so that pruning 25 % keeps 3 / 6 per
    # group (with 8 groups of 2 channels any pruning leaves instance-norm groups of one)
    layers_per_block=1, block_out_channels=(16, 32), norm_num_groups=4,
    down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
    up_block_types=('AttnUpBlock2D', 'UpBlock2D'))

model = dict(
    type='DiffusionDistiller',
    teacher=None,  # train `student` from scratch with DSM
    student=unet,
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='linear'),
    num_inference_steps=50,  # DDIM with the training schedule
    losses=dict(dsm=dict(loss_weight=1.0), kd=None),
    pixel_reduction='sum',
    antithetic_timesteps=True,
    # decay ramped up to 0.999 (WarmupExponentialMovingAverage): after n updates the
    # average holds none of the random initialisation, unlike a fixed 0.999 (0.999^n)
    ema=dict(type='WarmupExponentialMovingAverage', momentum=1e-3, start_iter=0),
    data_preprocessor=dict(type='DiffusionDataPreprocessor'))

train_dataloader = dict(
    batch_size=32, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='SklearnDigits', image_size=image_size, split='train',
                 pipeline=[dict(type='PackInputs', keys=['gt'])]))
test_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='SklearnDigits', image_size=image_size, split='test',
                 pipeline=[dict(type='PackInputs', keys=['gt'])]))
val_dataloader = None
val_cfg = None
val_evaluator = None
test_evaluator = dict(type='Evaluator', metrics=[dict(type='TeacherFidelity', fake_nums=64)])

# foreach: on CPU torch loops over the parameters in Python unless asked; the foreach
# kernels give bitwise the same weights (tests/test_configs/test_digits_optimizer.py) in
# less time, which counts at batch 2, where an iteration is mostly per-tensor overhead.
optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    student=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-3, foreach=True),
                 clip_grad=dict(max_norm=1.0, foreach=True)))
train_cfg = dict(by_epoch=False, max_iters=6000, val_interval=10**9)
param_scheduler = None

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=1000, by_epoch=False,
                    max_keep_ckpts=2, save_optimizer=True),
    visualization=dict(interval=1000))
env_cfg = dict(dist_cfg=dict(backend='gloo'), cudnn_benchmark=False)
randomness = dict(seed=0)
