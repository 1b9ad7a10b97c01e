# 2ndMatch on CelebA 64x64 faces (CelebA-HQ: change the crop, see Data).
#
# Teacher: DDPM U-Net 64x64 in the layout of the DDIM CelebA model used by Diff-Pruning
#   (ch 128, mult 1-2-2-2-4, attention at 16x16, 2 res blocks: 78.7M params, 23.9G MACs).
#   There is no official diffusers hub copy of it: `teacher_path` must be a diffusers
#   UNet2DModel folder with this layout (e.g. the DDIM checkpoint from ermongroup/ddim
#   converted with diffusers' DDPM conversion script, or your own trained model); or set
#   `model.teacher_ckpt` to an MMEngine checkpoint of the same architecture.
# Student: pruned at run start (ratio 0.3, 0.25 for GroupNorm-tied groups: measured 43.7M /
#   13.3G on this layout, Diff-Pruning's published CelebA size).
# Data: CelebA's img_align_celeba (178x218 JPEGs), DDIM's 128x128 face crop resized to
#   64x64 (_base_/datasets/celeba_64.py; CelebA-HQ needs another crop).
# Recipe (not in the paper) against Diff-Pruning's CelebA finetuning (ddpm_exp/configs/
#   celeba.yml, one process): batch 96, Adam 2e-4, grad-clip 1.0, dropout 0.1, EMA 0.9999
#   (from step 0: lag 0.9999^100000 = 4.5e-5 over 100k iterations), DDIM-100 with eta 0,
#   diff-pruning threshold 0.05 (--thr). Loss: the CIFAR-10 weights. FID-50k with the
#   StyleGAN Inception: differs on purpose as in 2ndm_cifar10.py (Diff-Pruning's
#   fid_score.py is pytorch-fid's).
_base_ = [
    './_base_/models/ddpm_unet_2ndm.py',
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/celeba_64.py'
]

teacher_path = 'checkpoints/ddpm-celeba-64'  # diffusers folder, see header (no hub id)
data_root = 'data/celeba/img_align_celeba'  # folder of images
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/celeba64_fid50k.pkl'  # real-feature cache

model = dict(teacher=dict(from_pretrained=teacher_path, dropout=0.1))

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
