# 2ndMatch on CelebA / CelebA-HQ 64x64 faces.
#
# Teacher: DDPM U-Net 64x64 in the layout of the DDIM CelebA model used by Diff-Pruning
#   (ch 128, mult 1-2-2-2-4, attention at 16x16, 2 res blocks: 78.7M params, 23.9G MACs).
#   There is no official diffusers hub copy of it: `teacher_path` must be a diffusers
#   UNet2DModel folder with this layout (e.g. the DDIM checkpoint from ermongroup/ddim
#   converted with diffusers' DDPM conversion script, or your own trained model); or set
#   `model.teacher_ckpt` to an MMEngine checkpoint of the same architecture.
# Student: pruned at run start (ratio 0.3, 0.25 for GroupNorm-tied groups: measured 43.7M /
#   13.3G on this layout, Diff-Pruning's published CelebA size).
# Data: a folder of face images (recursive), centre-cropped and resized to 64x64.
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
