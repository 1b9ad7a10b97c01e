# CelebA faces at 64x64 through MMagic's `BasicImageDataset` (every image under data_root,
# recursively), preprocessed as the DDIM CelebA model (the teacher of 2ndm_celeba.py) and
# Diff-Pruning's finetuning: from the 178x218 aligned images (img_align_celeba) the 128x128
# crop with top-left corner (x=25, y=57), i.e. DDIM's Crop(x1=57, x2=185, y1=25, y2=153),
# resized to 64 and flipped for training. Other face folders (CelebA-HQ's 1024 squares)
# need their own crop, e.g. `dict(type='CenterCropLongEdge', keys=['gt'])` in its place.
# Batch 96: Diff-Pruning's celeba.yml (one process). Images keep their loader order (BGR,
# `gt_channel_order`) in the data sample (`PackInputs()`; see cifar10_32.py).
_base_ = ['mmagic::_base_/datasets/unconditional_imgs_64x64.py']

data_root = 'data/celeba/img_align_celeba'

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='FixedCrop', keys=['gt'], crop_size=(128, 128), crop_pos=(25, 57)),
    dict(type='Resize', keys='gt', scale=(64, 64), backend='pillow'),
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='FixedCrop', keys=['gt'], crop_size=(128, 128), crop_pos=(25, 57)),
    dict(type='Resize', keys='gt', scale=(64, 64), backend='pillow'),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=96,
    dataset=dict(data_root=data_root, recursive=True, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=96,
    dataset=dict(data_root=data_root, recursive=True, pipeline=val_pipeline))
test_dataloader = val_dataloader
