# An LSUN category (church_outdoor, bedroom) as a folder of images, centre-cropped to a
# square and resized to 256x256 (DDPM's LSUN preprocessing), through MMagic's
# `BasicImageDataset`. The LMDB variant (`2ndm_lsun_church_lmdb.py`) reads the
# official LSUN LMDB through MMEngine's `lmdb` file backend instead.
_base_ = ['mmagic::_base_/datasets/lsun_stylegan.py']

data_root = 'data/lsun/church_outdoor_train'

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(256, 256), backend='pillow'),
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs', keys=['gt'])
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(256, 256), backend='pillow'),
    dict(type='PackInputs', keys=['gt'])
]

train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    dataset=dict(data_root=data_root, recursive=True, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    dataset=dict(data_root=data_root, recursive=True, pipeline=val_pipeline))
test_dataloader = val_dataloader
