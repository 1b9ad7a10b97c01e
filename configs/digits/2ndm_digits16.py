# 2ndMatch on the digits study: the dense teacher of teacher_digits16.py, pruned at run start
# with diff-pruning importance (ratio 0.25: 3 of 4 / 6 of 8 channels kept per GroupNorm group,
# 56 % of the parameters, Diff-Pruning's share on CIFAR-10), finetuned with DSM + KD + 2ndM.
# The student EMA warms up (decay min(0.999, (1 + n) / (10 + n))), so after a 1500-iteration
# run it holds none of the freshly pruned weights. The Jacobian term
# uses the timestep-scaled form (J v times sigma_t, weight 10; see METHOD.md "Scale of the
# Jacobian term") on a quarter of each batch (a 2ndM iteration costs ~4x a KD one on CPU).
#
#   python tools/train.py configs/digits/2ndm_digits16.py --work-dir work_dirs/digits/2ndm
#   (other run lengths: train_cfg.max_iters=N param_scheduler.T_max=N)
_base_ = ['./teacher_digits16.py']

# the study's teacher, shipped (checkpoints/digits/README.md); a run of teacher_digits16.py
# gives the same keys: --cfg-options model.teacher_ckpt.filename=<its iter_6000.pth>
teacher_ckpt = 'checkpoints/digits/teacher_digits16_ema.pth'
model = dict(
    _delete_=True,
    type='DiffusionDistiller',
    teacher={{_base_.unet}},
    # the teacher run trained `student`; its EMA is the teacher here
    teacher_ckpt=dict(filename=teacher_ckpt, prefix='student_ema.module.model.'),
    student=None,  # a copy of the teacher, pruned by DiffusionPruningHook
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='linear'),
    num_inference_steps=50,
    losses=dict(
        dsm=dict(loss_weight=1.0),
        kd=dict(loss_weight=1.0),
        jacobian=dict(type='2ndMatchLoss', loss_weight=10.0, num_projections=1,
                      mode='jvp', batch_fraction=0.25, scale='sigma', t_range=None,
                      warmup_iters=0)),
    pixel_reduction='sum',
    antithetic_timesteps=True,
    ema=dict(type='WarmupExponentialMovingAverage', momentum=1e-3, start_iter=0),
    data_preprocessor=dict(type='DiffusionDataPreprocessor'))

custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.25, importance='diff-pruning')]
# half the teacher's learning rate, annealed to 1 % of it over the run: with a constant 5e-4
# the raw student's proxy FID jumped between checkpoints (436 / 863 / 603 / 168 at
# 150 / 300 / 450 / 600 iterations) and its EMA lagged behind; set T_max to max_iters
optim_wrapper = dict(student=dict(optimizer=dict(lr=5e-4)))
train_cfg = dict(max_iters=600)
param_scheduler = dict(_delete_=True, type='CosineAnnealingLR', by_epoch=False, T_max=600,
                       eta_min=5e-6)
default_hooks = dict(visualization=dict(interval=200))
