# An LSUN category (church_outdoor, bedroom) as a folder of images, centre-cropped to a
# square and resized to 256x256 (DDPM's LSUN preprocessing), through MMagic's
# `BasicImageDataset`. LSUN's own export (`python data.py export <category>_train_lmdb
# --out_dir <data_root>`) writes WebP files in nested folders <k0>/<k1>/.../<key>.webp:
# listed recursively, with '.webp' added to MMagic's image suffixes (which lack it). The
# LMDB variant (`2ndm_lsun_church_lmdb.py`) reads the official LMDB through MMEngine's
# `lmdb` file backend instead. Images keep their loader order (BGR, `gt_channel_order`)
# in the data sample (`PackInputs()`; see cifar10_32.py).
_base_ = ['mmagic::_base_/datasets/lsun_stylegan.py']

data_root = 'data/lsun/church_outdoor_train'
img_suffix = ('.webp', '.WEBP', '.jpg', '.JPG', '.jpeg', '.JPEG', '.png', '.PNG')

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(256, 256), backend='pillow'),
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(256, 256), backend='pillow'),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=16,
    num_workers=8,
    dataset=dict(data_root=data_root, recursive=True, img_suffix=img_suffix,
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=8,
    dataset=dict(data_root=data_root, recursive=True, img_suffix=img_suffix,
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
