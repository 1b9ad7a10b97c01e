# A DDPM U-Net teacher (a diffusers UNet2DModel folder) finetuned into a pruned student with
# the authors' released 2ndMatch hyper-parameters (METHOD.md): DSM 1 + KD 1 + 2ndM 0.1, K=1
# projection, pixel-summed MSE, antithetic timesteps, EMA 0.9999, DDIM-100 sampling. The
# student is the teacher pruned at run start to Diff-Pruning's setting (ratio 0.3, 0.25 for
# GroupNorm-tied groups, diff-pruning importance with Diff-Pruning's released --thr 0.05:
# gradients are accumulated from t = 0 up until a loss falls below 0.05 x the largest).
# Configs that inherit this file set `model.teacher.from_pretrained` to their local teacher
# folder.
model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='UNet2DModel', from_pretrained=None),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='linear'),
    num_inference_steps=100,  # DDIM with the training schedule (test_scheduler=None)
    losses=dict(
        dsm=dict(loss_weight=1.0),
        kd=dict(loss_weight=1.0),
        # mode='jvp': the paper's J^T J; 'vjp' reproduces the released double backward.
        # scale=None: the paper's unscaled term; 'sigma' tames small-t samples.
        jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, num_projections=1, mode='jvp',
                      scale=None)),
    pixel_reduction='sum',
    antithetic_timesteps=True,
    ema=dict(momentum=1e-4, start_iter=0),  # decay 0.9999
    # The teachers work in RGB: images reach them in RGB whatever the loader's order (read
    # from gt_channel_order), and their samples go back to MMagic's BGR for the metrics.
    data_preprocessor=dict(type='DiffusionDataPreprocessor', output_channel_order='RGB'))

custom_hooks = [
    dict(type='DiffusionPruningHook', ratio=0.3, importance='diff-pruning',
         prune_cfg=dict(groupnorm_ratio=0.25, diff_pruning_thr=0.05))
]
