# 2ndMatch on CIFAR-10 32x32 pixels with a small class-conditional DiT (the paper's
# transformer case; the paper's network is a U-ViT, published FID 4.63 DSM -> 4.05 2ndM).
#
# Teacher: a DiT-S/2 in pixel space (12 layers, 6 heads x 64, patch 2, 3 channels, 10
#   classes; 35.2M params measured). No public hub checkpoint exists: `teacher_path` is a
#   diffusers DiTTransformer2DModel folder you trained with this layout (the keywords are
#   repeated below for reference: DiTTransformer2DModel(**dit_s2_cifar10)).
# Student: pruned at run start (head dims and MLP channels, ratio 0.3).
# Loss, schedule, EMA, sampling and FID-50k as 2ndm_cifar10.py.
_base_ = ['./2ndm_cifar10.py']

teacher_path = 'checkpoints/dit-s2-cifar10'  # diffusers DiTTransformer2DModel folder
dit_s2_cifar10 = dict(num_attention_heads=6, attention_head_dim=64, in_channels=3,
                      out_channels=3, num_layers=12, sample_size=32, patch_size=2,
                      num_embeds_ada_norm=10)

model = dict(
    teacher=dict(type='DiTTransformer2DModel', from_pretrained=teacher_path,
                 _delete_=True),
    label_drop_prob=0.1)

custom_hooks = [dict(type='DiffusionPruningHook', ratio=0.3, importance='diff-pruning')]
