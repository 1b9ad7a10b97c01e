# ImageNet-1k 256x256 with class labels through MMagic's `ImageNet` (an annotation file
# of "<relative path> <label>" lines). Images are centre-cropped to a square and
# resized (ADM / LDM / DiT preprocessing) and flipped for training. `ImageNet` items carry
# `gt_path` / `gt_label`, so the image key is `gt`; `PackInputs()` keeps it in the data
# sample as `gt_img` with its loader order (BGR, `gt_channel_order`; see cifar10_32.py):
# the distiller's input and FID's real images.
_base_ = ['mmagic::_base_/datasets/imagenet_256.py']

data_root = 'data/imagenet'

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', scale=(256, 256), keys=['gt'], backend='pillow'),
    dict(type='Flip', keys=['gt'], flip_ratio=0.5, direction='horizontal'),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', scale=(256, 256), keys=['gt'], backend='pillow'),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=32,
    num_workers=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(data_root=data_root, ann_file='meta/train.txt', data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=8,
    dataset=dict(data_root=data_root, ann_file='meta/train.txt', data_prefix='train',
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
