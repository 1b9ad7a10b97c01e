# 2ndMatch on LSUN-Bedroom 256x256: 2ndm_lsun.py with the bedroom teacher and data.
#
# Teacher: google/ddpm-ema-bedroom-256 (same U-Net layout as the church model), e.g.
#   `huggingface-cli download google/ddpm-ema-bedroom-256 --local-dir
#   checkpoints/ddpm-ema-bedroom-256`.
# lr: Adam 2e-6, the releases' bedroom configs (Diff-Pruning's and the 2ndM authors'
#   bedroom.yml; the 2ndM one trains 4 per step x 8 accumulation steps). Everything else,
#   and how it differs from the releases, as 2ndm_lsun.py.
_base_ = ['./2ndm_lsun.py']

# local copy of hub id google/ddpm-ema-bedroom-256
teacher_path = 'checkpoints/ddpm-ema-bedroom-256'
data_root = 'data/lsun/bedroom_train'  # folder of images
inception_pkl = 'work_dirs/inception_pkl/lsun_bedroom256_fid50k.pkl'  # real-feature cache

model = dict(teacher=dict(from_pretrained=teacher_path))

optim_wrapper = dict(student=dict(optimizer=dict(lr=2e-6)))

train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))

metrics = [
    dict(type='FID', prefix='FID-50k', fake_nums=50000, real_nums=50000,
         inception_style='StyleGAN', inception_path={{_base_.inception_path}},
         inception_pkl=inception_pkl, sample_model='ema'),
]
val_evaluator = dict(metrics=metrics)
test_evaluator = dict(metrics=metrics)
