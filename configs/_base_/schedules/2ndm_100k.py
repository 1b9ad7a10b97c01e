# The authors' finetuning schedule (METHOD.md): Adam lr 2e-4, grad-clip 1.0, 100k
# iterations; only the student is optimised (the distiller refuses other parameters).
# The FID run happens once, at the end (sampling 50k images is the expensive part).
# Inherits the runtime (both define train_cfg / optim_wrapper, which sibling bases may not).
_base_ = ['../runtime_2ndm.py']

max_iters = 100000
train_cfg = dict(by_epoch=False, max_iters=max_iters, val_begin=1, val_interval=max_iters)

optim_wrapper = dict(
    constructor='MultiOptimWrapperConstructor',
    student=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=2e-4),
                 clip_grad=dict(max_norm=1.0)))
