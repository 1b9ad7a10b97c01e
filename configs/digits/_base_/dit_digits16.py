# The pixel DiT of the digits study's depth-pruning variant (teacher_digits16_dit.py and
# 2ndm_digits16_dit_d4.py): 8 blocks of 4 heads x 16 (width 64), patch 2 on 16x16x3 (64
# tokens), class-conditional on the 10 digits (adaLN-Zero; null label 10).
# `_delete_` lets a config put it in place of the U-Net it inherits.
dit = dict(
    _delete_=True, type='DiTTransformer2DModel', sample_size=16, in_channels=3,
    out_channels=3, num_layers=8, num_attention_heads=4, attention_head_dim=16, patch_size=2,
    num_embeds_ada_norm=10)
