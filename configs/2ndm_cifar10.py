# 2ndMatch on CIFAR-10 32x32 (the paper's main setting and the authors' released code).
#
# Teacher: DDPM U-Net, the google/ddpm-cifar10-32 layout (35.7M params, 6.06G MACs).
#   Download once on a machine with network access, e.g.
#   `huggingface-cli download google/ddpm-cifar10-32 --local-dir checkpoints/ddpm-cifar10-32`
#   (a diffusers UNet2DModel folder: config.json + diffusion_pytorch_model.*), or override:
#   --cfg-options model.teacher.from_pretrained=/path/to/ddpm-cifar10-32
# Student: a copy of the teacher pruned by `DiffusionPruningHook` at run start to the
#   Diff-Pruning size (19.85M / 3.39G measured on this layout with torch-pruning 1.6.1:
#   ratio 0.3, 0.25 for GroupNorm-tied groups), diff-pruning (Taylor) importance.
# Loss (authors' released hyper-parameters, METHOD.md): DSM 1 + KD 1 + 2ndM 0.1, K=1
#   projection, pixel-summed MSE, antithetic timesteps, Adam 2e-4, grad-clip 1, EMA 0.9999,
#   dropout 0.1, 100k iterations; DDIM-100 sampling, FID-50k against the training set.
# Data: CIFAR-10 python pickles at <data_root>/cifar-10-batches-py (not downloaded).
# FID: the StyleGAN TorchScript Inception
#   (https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt)
#   saved at `inception_path`; the real statistics are computed on the first run and cached
#   at `inception_pkl`.
_base_ = [
    './_base_/models/ddpm_unet_2ndm.py',
    './_base_/schedules/2ndm_100k.py',
    './_base_/datasets/cifar10_32.py'
]

teacher_path = 'checkpoints/ddpm-cifar10-32'  # local copy of hub id google/ddpm-cifar10-32
data_root = 'data/cifar10'  # holds cifar-10-batches-py/
inception_path = 'checkpoints/inception-2015-12-05.pt'  # StyleGAN TorchScript Inception
inception_pkl = 'work_dirs/inception_pkl/cifar10_train_fid50k.pkl'  # real-feature cache

model = dict(teacher=dict(from_pretrained=teacher_path, dropout=0.1))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

metrics = [
    dict(type='FID', prefix='FID-50k', fake_nums=50000, real_nums=50000,
         inception_style='StyleGAN', inception_path=inception_path,
         inception_pkl=inception_pkl, sample_model='ema'),
    # Diff-Pruning's dense-vs-pruned SSIM from the same noise (0.932 published).
    dict(type='TeacherFidelity', fake_nums=1000, sample_model='ema'),
]
val_evaluator = dict(metrics=metrics)
test_evaluator = dict(metrics=metrics)
