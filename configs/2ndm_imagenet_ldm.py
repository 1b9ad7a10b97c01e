# 2ndMatch on ImageNet 256x256 with an LDM-4 class-conditional U-Net (the paper's ImageNet
# row: 400.9M -> 175.8M, FID 3.60 dense / 10.23 DSM / 5.68 2ndM).
#
# Teacher format: the released CompVis cin256 LDM-4 has no diffusers version; it
#   conditions through cross-attention on a class embedding and uses a VQ-f4 autoencoder,
#   which DiffusionDistiller does not drive (it feeds labels as `class_labels` and
#   encodes with AutoencoderKL's `latent_dist`). This config is the LDM-4 layout in
#   diffusers terms: a UNet2DModel on 64x64x3 latents (192 channels, mult 1-2-3-5,
#   attention at 32/16/8, 32-d heads) with a label embedding of 1001 entries (1000 =
#   null label), built from the keywords below and loaded from `teacher_ckpt`: an MMEngine
#   checkpoint or a plain state dict of that UNet2DModel (e.g. converted from the CompVis
#   weights, or trained). A diffusers UNet2DModel folder works too:
#   model.teacher=dict(type='UNet2DModel',from_pretrained=<folder>) and teacher_ckpt=None.
#   `vae_path` is a diffusers AutoencoderKL folder of a KL-f4 autoencoder with 3 latent
#   channels (CompVis first-stage kl-f4, converted).
# Student: pruned at run start (ratio 0.3, 0.25 for GroupNorm-tied groups).
_base_ = [
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/imagenet_256.py'
]

teacher_ckpt = 'checkpoints/ldm4-cin256-unet.pth'  # UNet2DModel weights (see header)
vae_path = 'checkpoints/kl-f4'  # diffusers AutoencoderKL folder, 3 latent channels
data_root = 'data/imagenet'
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/imagenet256_fid50k.pkl'  # real-feature cache

model = dict(
    type='DiffusionDistiller',
    teacher=dict(
        type='UNet2DModel', sample_size=64, in_channels=3, out_channels=3,
        layers_per_block=2, block_out_channels=(192, 384, 576, 960),
        down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'AttnDownBlock2D',
                          'AttnDownBlock2D'),
        up_block_types=('AttnUpBlock2D', 'AttnUpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
        attention_head_dim=32, norm_num_groups=32, num_class_embeds=1001),
    teacher_ckpt=teacher_ckpt,
    vae=dict(type='AutoencoderKL', from_pretrained=vae_path),
    num_classes=1000,
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='scaled_linear', beta_start=0.0015, beta_end=0.0195),
    num_inference_steps=100,
    label_drop_prob=0.1,
    losses=dict(
        dsm=dict(loss_weight=1.0),
        kd=dict(loss_weight=1.0),
        jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, num_projections=1, mode='jvp')),
    pixel_reduction='sum',
    ema=dict(momentum=1e-4, start_iter=0),
    # pretrained teachers see RGB; MMagic loads BGR (destruct turns samples back)
    data_preprocessor=dict(type='DataPreprocessor', output_channel_order='RGB'))

custom_hooks = [
    dict(type='DiffusionPruningHook', ratio=0.3, importance='diff-pruning',
         prune_cfg=dict(groupnorm_ratio=0.25))
]

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
