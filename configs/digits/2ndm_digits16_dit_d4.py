# Depth pruning on the digits study: the dense 8-block DiT of teacher_digits16_dit.py loses
# half of its blocks (1 of every 2 kept, TinyFusion's learnable N:M selection: a short
# Gumbel-softmax search over the patterns of each pair, trained jointly with the weights on
# the student DSM loss, batch by batch; the argmax pattern is kept and the student starts
# from the teacher's blocks). Finetuned as 2ndm_digits16.py (DSM + KD + sigma_t-scaled
# 2ndM, 1500 iterations) plus TinyFusion's feature term: student block i matched to the
# teacher block it was copied from (kept[i]; block_map='auto' reads the record once the hook
# has pruned), activations beyond 2 sigma masked, weight decaying linearly to 0 over the
# run. TinyFusion weighs it 1e-2 against element-mean losses; DSM and KD here are
# pixel-summed (3 x 16 x 16 = 768 elements): 7.68.
#
#   python tools/train.py configs/digits/2ndm_digits16_dit_d4.py \
#       --work-dir work_dirs/digits/2ndm_dit_d4 \
#       --cfg-options model.teacher_ckpt.filename=work_dirs/digits/teacher_dit/iter_6000.pth
_base_ = ['./2ndm_digits16.py', './_base_/dit_digits16.py']

teacher_ckpt = 'work_dirs/digits/teacher_dit/iter_6000.pth'
model = dict(
    teacher={{_base_.dit}},
    teacher_ckpt=dict(filename=teacher_ckpt),
    losses=dict(feat=dict(type='FeatureKDLoss', layers='dit', block_map='auto',
                          reduction='mean', loss_weight=7.68, mask_sigma=2.0,
                          weight_schedule='linear', schedule_iters=1500)))

custom_hooks = [dict(type='DiffusionPruningHook', method='depth',
                     depth_cfg=dict(keep=1, group_size=2, selector='learnable', steps=200))]
train_cfg = dict(max_iters=1500)
param_scheduler = dict(T_max=1500)
