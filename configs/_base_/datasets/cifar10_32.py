# CIFAR-10 32x32 through MMagic's `CIFAR10` (python pickles under
# <data_root>/cifar-10-batches-py, md5-checked; download=False: no network access is
# assumed). Training images are flipped; FID's real statistics use the 50k training
# images, as DDPM / Diff-Pruning do.
# `CIFAR10` yields RGB (gt_channel_order='RGB'). `PackInputs()` keeps the image in the data
# sample (gt_img) beside that order, so the data preprocessor converts it to the model's
# order and FID's real images to BGR correctly; `PackInputs(keys=['gt'])` would make it a
# bare input tensor of unknown order, which MMagic's preprocessor takes for BGR and swaps.
data_root = 'data/cifar10'

train_pipeline = [
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs')
]
val_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='CIFAR10', data_root=data_root, data_prefix='', test_mode=False,
                 download=False, pipeline=train_pipeline))

val_dataloader = dict(
    batch_size=128,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CIFAR10', data_root=data_root, data_prefix='', test_mode=False,
                 download=False, pipeline=val_pipeline))

test_dataloader = val_dataloader
