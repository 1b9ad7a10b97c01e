# Runtime shared by every 2ndMatch config: MMagic's generative runtime (default_scope
# 'mmagic', MMSeparateDistributedDataParallel, MultiOptimWrapperConstructor, MultiValLoop /
# MultiTestLoop) plus the plugin import, so that `tools/train.py` and `mim train` find the
# DiffusionDistiller, 2ndMatchLoss, DiffusionPruningHook and the dataset classes.
_base_ = ['mmagic::_base_/gen_default_runtime.py']

custom_imports = dict(imports=['mmdiff_2ndm'], allow_failed_imports=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=10000, by_epoch=False,
                    max_keep_ckpts=5, save_optimizer=True))
