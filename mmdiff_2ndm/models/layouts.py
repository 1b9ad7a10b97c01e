"""Published denoiser layouts as diffusers keywords, for benchmarks and tests that need the
real architecture with random weights (no download)."""

#: google/ddpm-cifar10-32 (DDPM's CIFAR-10 U-Net, 35.7M parameters): attention at 16x16
#: with one head over all channels (``attention_head_dim=None``), dropout 0.1.
DDPM_CIFAR10_32 = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=('DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D'),
    attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, dropout=0.1)

#: facebook/DiT-XL-2-256 (DiT-XL/2 on 32x32x4 latents, 1000 classes, learned sigma): 28
#: blocks of 16 heads x 72; 749.8M parameters in diffusers' layout (an adaLN embedder per
#: block), 675M as DiT counts them.
DIT_XL_2_256 = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
    num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
