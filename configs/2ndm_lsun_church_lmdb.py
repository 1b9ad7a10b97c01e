# 2ndm_lsun.py reading the official LSUN LMDB (e.g. church_outdoor_train_lmdb) directly:
# keys are 40-character hex strings, values WebP images, decoded by OpenCV as BGR (kept as
# `gt_channel_order`, so the teacher still sees RGB).
#
# MMEngine's `lmdb` file backend serves the images; `BasicImageDataset` needs the list of
# keys as an annotation file (one key per line; `LoadImageFromFile` looks up the base
# name of each entry). Write it once, e.g.
#   python -c "import lmdb; e = lmdb.open('data/lsun/church_outdoor_train_lmdb', \
#   readonly=True, lock=False); \
#   print('\n'.join(k.decode() for k, _ in e.begin().cursor()))" > data/lsun/church_keys.txt
# Needs the `lmdb` package.
_base_ = ['./2ndm_lsun.py']

lmdb_path = 'data/lsun/church_outdoor_train_lmdb'  # folder holding data.mdb
lmdb_keys = 'data/lsun/church_keys.txt'  # one LMDB key per line

lmdb_backend = dict(backend='lmdb', db_path=lmdb_path)
train_pipeline = [
    dict(type='LoadImageFromFile', key='gt', backend_args=lmdb_backend),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(256, 256), backend='pillow'),
    dict(type='Flip', keys=['gt'], direction='horizontal', flip_ratio=0.5),
    dict(type='PackInputs')
]
val_pipeline = [
    dict(type='LoadImageFromFile', key='gt', backend_args=lmdb_backend),
    dict(type='CenterCropLongEdge', keys=['gt']),
    dict(type='Resize', keys='gt', scale=(256, 256), backend='pillow'),
    dict(type='PackInputs')
]
lmdb_dataset = dict(type='BasicImageDataset', data_root='', ann_file=lmdb_keys,
                    data_prefix=dict(gt=''))

train_dataloader = dict(dataset=dict(lmdb_dataset, _delete_=True, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(lmdb_dataset, _delete_=True, pipeline=val_pipeline))
test_dataloader = dict(dataset=dict(lmdb_dataset, _delete_=True, pipeline=val_pipeline))
