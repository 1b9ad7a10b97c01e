# 2ndMatch on LSUN-Church 256x256 (bedroom: 2ndm_lsun_bedroom.py, LMDB data:
# 2ndm_lsun_church_lmdb.py).
#
# Teacher: DDPM U-Net 256, the google/ddpm-ema-church-256 layout (113.7M params). Download
#   once, e.g. `huggingface-cli download google/ddpm-ema-church-256 --local-dir
#   checkpoints/ddpm-ema-church-256` (a diffusers UNet2DModel folder), or override
#   --cfg-options model.teacher.from_pretrained=/path/to/folder
# Student: pruned at run start, ratio 0.3 with 0.25 for GroupNorm-tied groups: measured
#   113.67M / 248.7G -> 63.21M / 138.9G MACs on this layout (torch-pruning 1.6.1), the
#   published 113.7M -> 63.2M.
# Data: a folder of LSUN images (export of the official LMDB), centre-cropped, 256x256.
# Loss, EMA, optimiser: as CIFAR-10 (METHOD.md). DDIM-100 sampling, FID-50k.
_base_ = [
    './_base_/models/ddpm_unet_2ndm.py',
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/lsun_256.py'
]

teacher_path = 'checkpoints/ddpm-ema-church-256'  # local copy of hub id google/ddpm-ema-church-256
data_root = 'data/lsun/church_outdoor_train'  # folder of images
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/lsun_church256_fid50k.pkl'  # real-feature cache

model = dict(teacher=dict(from_pretrained=teacher_path))

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
