# 2ndMatch on ImageNet 256 with a depth-pruned DiT-XL/2: TinyDiT-D14 (TinyFusion, Fang et
# al., 2025: 28 -> 14 blocks, 675M -> 340M as DiT counts them, FID 2.86 after 500K
# iterations at 1.96x the sampling speed).
#
# Teacher, data, sampling, FID and optimiser: 2ndm_imagenet_dit.py.
# Student: half of the blocks removed at run start, 2 of every 4 kept (one of TinyFusion's
#   N:M patterns), chosen by TinyFusion's learnable selection: a Gumbel-softmax over the 6
#   patterns of each group, trained jointly with the weights on the student DSM loss for
#   2000 steps (a new training batch per step, rank 0; TinyFusion searches longer), the
#   argmax pattern kept, the student starting from the teacher's blocks. tools/prune.py
#   runs the same search once (--method depth --keep 2 --group-size 4 --selector learnable).
# Losses: the paper's (DSM + KD + 2ndM, from 2ndm_imagenet_dit.py) plus TinyFusion's
#   feature term: student block i matched to teacher block kept[i] (block_map='auto' reads
#   the record once the hook has pruned), activations beyond 2 sigma masked, weight 1e-2
#   decaying linearly to 0 over the run. TinyFusion's losses are element means; DSM and KD
#   here are summed over the 4 x 32 x 32 latent: 1e-2 x 4096.
# A depth-only student is a plain DiT: tools/export.py writes it with num_layers=14, loadable
#   by DiTTransformer2DModel.from_pretrained / DiTPipeline.from_pretrained without this plugin.
_base_ = ['./2ndm_imagenet_dit.py']

model = dict(losses=dict(
    feat=dict(type='FeatureKDLoss', layers='dit', block_map='auto', reduction='mean',
              loss_weight=40.96, mask_sigma=2.0, weight_schedule='linear',
              schedule_iters=100000)))

custom_hooks = [dict(type='DiffusionPruningHook', method='depth',
                     depth_cfg=dict(keep=2, group_size=4, selector='learnable', steps=2000,
                                    lr=1e-4, mask_lr=0.1))]
