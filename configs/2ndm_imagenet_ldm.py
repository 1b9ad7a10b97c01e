# 2ndMatch on ImageNet 256x256 with the LDM-4 class-conditional U-Net (the paper's ImageNet
# row: 400.9M -> 175.8M, FID 3.60 dense / 10.23 DSM / 5.68 2ndM).
#
# Teacher: CompVis's cin256 LDM-4 (latent-diffusion model zoo, `cin.zip` = model.ckpt +
#   config.yaml, i.e. configs/latent-diffusion/cin256-v2.yaml; there is no diffusers copy
#   on the hub). Convert it once, then set `ldm_path` to the output folder:
#     python tools/convert_compvis_ldm.py cin/model.ckpt cin/config.yaml checkpoints/ldm4-cin256
#   unet/: UNet2DConditionModel on 64x64x3 latents, 400.9M, whose cross-attention reads
#   the class embedding; vqvae/: the VQ-f4 first stage (latents are its pre-quantisation
#   output, scale 1.0, decoding quantises, as in LDM); class_embedder.pth: the 1001 x 512
#   label table (label 1000 = null label, used for label dropout and guidance), frozen
#   and shared by teacher and student.
# Student: pruned at run start (ratio 0.32, 0.27 for GroupNorm-tied groups: 400.9M ->
#   173.8M, the paper's 175.8M within 2%; cross-attention keys/values keep the 512-d
#   context), diff-pruning threshold 0.05 (Diff-Pruning's --thr).
# Recipe: the paper's finetuning recipe for this row is not in the authors' release
#   (CIFAR-10 only); Diff-Pruning's LDM config (ldm_exp/configs/latent-diffusion/
#   cin256-v2.yaml) is AdamW at base lr 2e-6 x batch 16 x GPUs (LDM scales it: 3.2e-5 on
#   one GPU, 2.56e-4 on 8), no EMA, 4 epochs (its README). Here: the CIFAR-10 schedule
#   (Adam 2e-4, grad-clip 1, 100k iterations), batch 32 per GPU, and the paper's EMA 0.9999
#   from step 0 (lag 0.9999^100000 = 4.5e-5). Sampling LDM-4-G (below). FID-50k with the
#   StyleGAN Inception: differs on purpose as in 2ndm_cifar10.py (Diff-Pruning's
#   ldm_exp/fid_score.py is pytorch-fid).
_base_ = [
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/imagenet_256.py'
]

ldm_path = 'checkpoints/ldm4-cin256'  # output of tools/convert_compvis_ldm.py
data_root = 'data/imagenet'
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/imagenet256_fid50k.pkl'  # real-feature cache

model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='UNet2DConditionModel', from_pretrained=f'{ldm_path}/unet'),
    vae=dict(type='VQModel', from_pretrained=f'{ldm_path}/vqvae'),
    class_embedder=dict(type='ClassEmbedder', num_embeddings=1001, embed_dim=512,
                        checkpoint=f'{ldm_path}/class_embedder.pth'),
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='scaled_linear', beta_start=0.0015, beta_end=0.0195,
                         clip_sample=False),  # latents: the sampler must not clip x_0 to [-1, 1]
    # The dense 3.60 is LDM-4-G: 250 DDIM steps with classifier-free guidance 1.5
    # (LDM paper); without guidance the teacher scores 10.56.
    num_inference_steps=250,
    guidance_scale=1.5,
    label_drop_prob=0.1,
    losses=dict(
        dsm=dict(loss_weight=1.0),
        kd=dict(loss_weight=1.0),
        jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, num_projections=1, mode='jvp')),
    pixel_reduction='sum',
    ema=dict(momentum=1e-4, start_iter=0),
    # The teachers work in RGB: images reach them in RGB whatever the loader's order (read
    # from gt_channel_order), and their samples go back to MMagic's BGR for the metrics.
    data_preprocessor=dict(type='DiffusionDataPreprocessor', output_channel_order='RGB'))

custom_hooks = [
    dict(type='DiffusionPruningHook', ratio=0.32, importance='diff-pruning',
         prune_cfg=dict(groupnorm_ratio=0.27, diff_pruning_thr=0.05))
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
