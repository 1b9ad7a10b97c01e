# 2ndMatch for text-to-image: Stable Diffusion 1.x teacher, BK-SDM-Base student, MS-COCO
# captions (published FID 13.05 for SD 1.4; BK-SDM-Base 15.76 -> 13.84 with 2ndM).
#
# Teacher: CompVis/stable-diffusion-v1-4 (UNet 860M, CLIP ViT-L/14 text encoder, VAE).
#   Download once, e.g. `huggingface-cli download CompVis/stable-diffusion-v1-4
#   --local-dir checkpoints/stable-diffusion-v1-4` (a diffusers pipeline folder with
#   unet/, vae/, text_encoder/, tokenizer/); any SD 1.x folder works.
# Student: BK-SDM-Base (the SD U-Net with one ResNet+attention pair removed per stage,
#   0.58B), built from the loaded teacher by `BKSDMStudent` (mmdiff_2ndm/models/
#   block_removal.py: BK-SDM's block removal, the kept blocks initialised with the
#   teacher's weights; variant='small' also removes the mid block (0.48B), 'tiny' also the
#   innermost stage (0.32B)). That is BK-SDM's *initialisation*: the published BK-SDM
#   models add the authors' distillation pretraining (50k iterations of output + feature
#   KD on LAION-Aesthetics), and the published 2ndM result (BK-SDM-Base 15.76 -> 13.84)
#   finetunes that pretrained model. To start from it, download hub id
#   nota-ai/bk-sdm-base (`huggingface-cli download nota-ai/bk-sdm-base --local-dir
#   checkpoints/bk-sdm-base`; BK-SDM-Small: nota-ai/bk-sdm-small) and load its unet/ in a
#   derived config:
#     _base_ = './2ndm_mscoco_sd.py'
#     model = dict(student=dict(_delete_=True, type='UNet2DConditionModel',
#                               from_pretrained='checkpoints/bk-sdm-base', subfolder='unet'))
#   The student is not pruned here (it has its own architecture), so there is no
#   DiffusionPruningHook.
# Data: MS-COCO 2014 captions (CocoCaptionDataset): train2014 for training, val2014 (one
#   caption per image) as the FID reference images.
# FID prompts: MMagic 1.2's FID sampler conditions only on class labels (need_cond_input
#   reads `gt_label` from the dataset), never on captions, so validation samples cycle
#   through `model.sample_prompts`. BK-SDM's protocol (30k val2014 captions, 25 steps,
#   guidance 7.5) needs those captions as `sample_prompts`, e.g.
#   --cfg-options "model.sample_prompts=[...]" or a derived config that lists them.
# CLIP score: this plugin's `CLIPScore` metric (MMagic 1.2 has none), 100 * max(cos, 0)
#   between CLIP ViT-L/14 embeddings of each sample and its prompt, on the same samples
#   and prompts as FID. CLIP: hub id openai/clip-vit-large-patch14, downloaded once, e.g.
#   `huggingface-cli download openai/clip-vit-large-patch14 --local-dir
#   checkpoints/clip-vit-large-patch14` (`clip_path`; a transformers CLIP folder with its
#   tokenizer, never downloaded by the metric). BK-SDM's published CLIP scores use
#   OpenCLIP ViT-g/14 (laion2b_s34b_b88k), so ViT-L/14 scores are not comparable to them.
# Recipe: 2ndM's loss weights for SD are not published (the CIFAR-10 ones are used), nor is the
#   paper's SD finetuning recipe (the authors' release is CIFAR-10 only); lr and length
#   follow BK-SDM's scripts/kd_train.sh: AdamW 5e-5, grad-clip 1, 512x512 centre crop +
#   flip, 50k iterations. Differs on purpose:
#   batch: 8 per GPU, one update per batch, where BK-SDM updates on 64 x 4 accumulation
#     steps = 256 images (its 50k counts updates): the SD teacher, the student and the
#     Jacobian pass at 512x512 need the memory. For BK-SDM's 50k updates of 256 on one GPU:
#     --cfg-options optim_wrapper.student.accumulative_counts=32
#     train_cfg.max_iters=1600000 train_cfg.val_interval=1600000
#   EMA: none (ema=None; FID and CLIP score the raw student, 'orig'), where BK-SDM's
#     kd_train.sh keeps one (--use_ema, diffusers' EMAModel).
_base_ = [
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/mscoco_512.py'
]

sd_path = 'checkpoints/stable-diffusion-v1-4'  # local copy of hub id CompVis/stable-diffusion-v1-4
data_root = 'data/coco'  # holds annotations/, train2014/, val2014/
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/coco_val2014_fid30k.pkl'  # real-feature cache
clip_path = 'checkpoints/clip-vit-large-patch14'  # hub id openai/clip-vit-large-patch14

model = dict(
    type='DiffusionDistiller',
    teacher=dict(type='UNet2DConditionModel', from_pretrained=sd_path, subfolder='unet'),
    student=dict(type='BKSDMStudent', variant='base'),  # from the teacher (see the header)
    vae=dict(type='AutoencoderKL', from_pretrained=sd_path, subfolder='vae'),
    text_encoder=sd_path + '/text_encoder',
    tokenizer=sd_path + '/tokenizer',
    noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000,
                         beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                         prediction_type='epsilon'),
    # Stable Diffusion's own DDIM: latents are not clipped to [-1, 1] (the DDPM default
    # clip_sample=True is meant for pixels), steps offset by 1, final alpha not forced to 1
    test_scheduler=dict(type='DDIMScheduler', num_train_timesteps=1000,
                        beta_schedule='scaled_linear', beta_start=0.00085, beta_end=0.012,
                        prediction_type='epsilon', clip_sample=False, set_alpha_to_one=False,
                        steps_offset=1),
    num_inference_steps=25,
    guidance_scale=7.5,
    label_drop_prob=0.1,  # empty prompt for classifier-free guidance
    sample_prompts=['a photo of an astronaut riding a horse on mars'],
    # BK-SDM's recipe (DSM + output KD + feature KD at the 8 down/up block outputs,
    # 1 / 1 / 1 as element means) with 2ndM on top, as the paper. DSM and KD are
    # pixel-summed here (4 x 64 x 64 = 16384 latent elements), so the element-mean
    # feature term gets weight 16384 to keep BK-SDM's proportions.
    losses=dict(
        dsm=dict(loss_weight=1.0),
        kd=dict(loss_weight=1.0),
        feat=dict(type='FeatureKDLoss', layers='bk-sdm', reduction='mean',
                  loss_weight=16384.0),
        jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, num_projections=1, mode='jvp')),
    pixel_reduction='sum',
    ema=None,  # see the header (BK-SDM's script keeps an EMA)
    # The teachers work in RGB: images reach them in RGB whatever the loader's order (read
    # from gt_channel_order), and their samples go back to MMagic's BGR for the metrics.
    data_preprocessor=dict(type='DiffusionDataPreprocessor', output_channel_order='RGB'))

max_iters = 50000
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(student=dict(optimizer=dict(type='AdamW', lr=5e-5, weight_decay=1e-2)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

metrics = [
    # Fake images from `model.sample_prompts` (see the header: no caption conditioning).
    dict(type='FID', prefix='FID-30k', fake_nums=30000, real_nums=30000,
         inception_style='StyleGAN', inception_path=inception_path,
         inception_pkl=inception_pkl, sample_model='orig'),
    # Same sampler group as FID (sample_model 'orig'): scores FID's images and prompts.
    dict(type='CLIPScore', prefix='CLIP-30k', fake_nums=30000, clip_path=clip_path,
         sample_model='orig'),
]
val_evaluator = dict(metrics=metrics)
test_evaluator = dict(metrics=metrics)
