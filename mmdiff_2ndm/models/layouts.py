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
