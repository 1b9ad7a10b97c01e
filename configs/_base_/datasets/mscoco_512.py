# MS-COCO captions for text-to-image: `CocoCaptionDataset` (this plugin) reads
# annotations/captions_<split>.json and the matching image folder; each item is an image
# (`gt`, kept in the data sample as `gt_img` with its BGR `gt_channel_order` by
# `PackInputs()`; see cifar10_32.py) and one caption (`prompt`). Training uses every
# caption of train2014; the FID reference / prompt set is val2014 with one caption per
# image (BK-SDM evaluates 30k val2014 prompts at 512x512, images resized to 256 for FID).
data_root = 'data/coco'

train_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(512, 512), backend='pillow'),
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt'),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(512, 512), backend='pillow'),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CocoCaptionDataset', data_root=data_root,
                 ann_file='annotations/captions_train2014.json',
                 data_prefix=dict(gt='train2014'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=8,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CocoCaptionDataset', data_root=data_root,
                 ann_file='annotations/captions_val2014.json',
                 data_prefix=dict(gt='val2014'), captions_per_image=1,
                 pipeline=val_pipeline))
test_dataloader = val_dataloader
