# A folder of face images (CelebA aligned crops or CelebA-HQ) at 64x64 through MMagic's
# `BasicImageDataset` (every image under data_root, recursively). CelebA's 178x218
# aligned crops are centre-cropped to a square first (DDIM / Diff-Pruning use a 140
# crop; `CenterCropLongEdge` takes the largest centred square), then resized. Images
# keep their loader order (BGR, `gt_channel_order`) in the data sample (`PackInputs()`;
# see cifar10_32.py).
_base_ = ['mmagic::_base_/datasets/unconditional_imgs_64x64.py']

data_root = 'data/celeba/img_align_celeba'

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(64, 64), backend='pillow'),
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(64, 64), backend='pillow'),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=64,
    dataset=dict(data_root=data_root, recursive=True, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=64,
    dataset=dict(data_root=data_root, recursive=True, pipeline=val_pipeline))
test_dataloader = val_dataloader
