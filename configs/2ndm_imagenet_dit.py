# 2ndMatch on ImageNet 256x256 with the class-conditional latent DiT-XL/2.
#
# Teacher: DiT-XL/2 (675M params as DiT counts them, 749.8M in diffusers' layout: see
#   configs/README.md; 28 layers, 16 heads x 72, patch 2, 32x32x4 latents, learned sigma)
#   and its VAE, the facebook/DiT-XL-2-256 layout. Download once, e.g.
#   `huggingface-cli download facebook/DiT-XL-2-256 --local-dir checkpoints/DiT-XL-2-256`;
#   `teacher_path` is that pipeline folder (subfolders transformer/ and vae/).
# Student: pruned at run start, attention head dims and MLP channels, ratio 0.3 (no
#   published DiT size; measured: 749.8M / 114.5G MACs -> 615.1M / 80.0G, configs/README.md;
#   a run writes its own to <work_dir>/pruning_summary.json).
# Labels: 1000 classes (null label 1000); labels dropped with p=0.1 for classifier-free
#   guidance, shared by teacher and student. Sampling: DDIM-100, guidance 1.5 off for FID
#   by default (guidance_scale=1), FID-50k with uniformly drawn labels.
# Recipe (not in the paper): DiT's training recipe, AdamW 1e-4 without weight decay, EMA
#   0.9999 from step 0 (lag 0.9999^100000 = 4.5e-5), 32 images per GPU (DiT: 256 on 8);
#   diff-pruning threshold 0.05 (Diff-Pruning's --thr). Differs from DiT's evaluation on
#   purpose: DDIM-100 instead of its 250 DDPM steps (sampling 50k images per evaluation),
#   and MMagic's FID with the StyleGAN Inception instead of ADM's TensorFlow suite.
_base_ = [
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/imagenet_256.py'
]

teacher_path = 'checkpoints/DiT-XL-2-256'  # local copy of hub id facebook/DiT-XL-2-256
data_root = 'data/imagenet'  # holds train/ and meta/train.txt ("<path> <label>" lines)
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/imagenet256_fid50k.pkl'  # real-feature cache

model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='DiTTransformer2DModel', from_pretrained=teacher_path,
                 subfolder='transformer'),
    vae=dict(type='AutoencoderKL', from_pretrained=teacher_path, subfolder='vae'),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='linear',
                         clip_sample=False),  # latents: the sampler must not clip x_0 to [-1, 1]
    num_inference_steps=100,
    label_drop_prob=0.1,
    guidance_scale=1.0,
    losses=dict(
        dsm=dict(loss_weight=1.0),
        kd=dict(loss_weight=1.0),
        jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, num_projections=1, mode='jvp')),
    pixel_reduction='sum',
    ema=dict(momentum=1e-4, start_iter=0),
    # The teachers work in RGB: images reach them in RGB whatever the loader's order (read
    # from gt_channel_order), and their samples go back to MMagic's BGR for the metrics.
    data_preprocessor=dict(type='DiffusionDataPreprocessor', output_channel_order='RGB'))

custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.3, importance='diff-pruning',
                     prune_cfg=dict(diff_pruning_thr=0.05))]

optim_wrapper = dict(student=dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

metrics = [
    dict(type='FID', prefix='FID-50k', fake_nums=50000, real_nums=50000,
         inception_style='StyleGAN', inception_path=inception_path,
         inception_pkl=inception_pkl, sample_model='ema'),
]
val_evaluator = dict(metrics=metrics)
test_evaluator = dict(metrics=metrics)
