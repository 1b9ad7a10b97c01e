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

#: google/ddpm-ema-church-256 and google/ddpm-ema-bedroom-256 (DDPM's LSUN 256x256 U-Net,
#: 113.7M parameters): six resolutions, attention at 16x16 with one head.
DDPM_LSUN_256 = dict(
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=('DownBlock2D', 'DownBlock2D', 'DownBlock2D', 'DownBlock2D',
                      'AttnDownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'AttnUpBlock2D', 'UpBlock2D', 'UpBlock2D', 'UpBlock2D',
                    'UpBlock2D'),
    attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1)

#: CompVis's LDM-4 cin256-v2 U-Net as ``tools/convert_compvis_ldm.py`` writes it
#: (UNet2DConditionModel on 64x64x3 VQ-f4 latents, 400.9M parameters): model_channels 192,
#: channel_mult (1, 2, 3, 5), attention at latent 32/16/8 with one head over all channels
#: (cin256-v2.yaml: ``num_heads: 1``; diffusers names the head count attention_head_dim),
#: one transformer layer cross-attending the 512-d class embedding (one context token).
LDM4_CIN256 = dict(
    sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(192, 384, 576, 960),
    down_block_types=('DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'CrossAttnDownBlock2D'),
    up_block_types=('CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'UpBlock2D'),
    attention_head_dim=1, cross_attention_dim=512, norm_num_groups=32)

#: runwayml/stable-diffusion-v1-5's U-Net (SD 1.x, 859.5M parameters; 64x64x4 latents,
#: 768-d CLIP text states).
SD_V1_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=('CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'CrossAttnDownBlock2D', 'DownBlock2D'),
    up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'),
    attention_head_dim=8, cross_attention_dim=768, norm_num_groups=32)
