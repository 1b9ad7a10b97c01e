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
# Data: LSUN's own export of the official LMDB (`python data.py export
#   church_outdoor_train_lmdb --out_dir <data_root>`: nested folders of .webp files), or any
#   folder of images; centre-cropped, 256x256.
# Loss: the CIFAR-10 weights (METHOD.md; none published for LSUN).
# Recipe against the releases' LSUN configs (Diff-Pruning's ddpm_exp/configs/church.yml and
# the 2ndM authors' IGSM-Official configs/church.yml, DDIM codebase):
#   lr: Adam 2e-5, their value (2e-4 is CIFAR-10's; bedroom: 2e-6, 2ndm_lsun_bedroom.py).
#   batch: 16 per GPU; Diff-Pruning's church script runs 4 processes with batch_size 8
#     (32): use 2 GPUs, or optim_wrapper.student.accumulative_counts=2 (and twice
#     max_iters) on one.
#   pruning: ratio 0.3 (+0.25 GroupNorm groups), diff-pruning threshold 0.05 (Diff-Pruning's
#     --thr; the 2ndM release has no LSUN pruning script).
#   EMA: decay 0.9999 from step 0, the paper's recipe (lag 0.9999^100000 = 4.5e-5 over 100k
#     iterations); the releases' LSUN configs set ema_rate 0.999. Grad-clip 1.0 (those
#     configs set none) and 100k iterations: as CIFAR-10.
#   sampler: DDIM-100, eta 0 (Diff-Pruning's LSUN scripts: --timesteps 100 --eta 0).
#   FID-50k: StyleGAN Inception, differs on purpose as in 2ndm_cifar10.py.
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

optim_wrapper = dict(student=dict(optimizer=dict(lr=2e-5)))  # the releases' LSUN lr

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
