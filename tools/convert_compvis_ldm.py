"""Converts a CompVis class-conditional LDM checkpoint into the folders our configs load.

The ImageNet LDM-4 of CompVis/latent-diffusion (model zoo ``cin.zip``: ``model.ckpt`` and
``config.yaml``, = ``configs/latent-diffusion/cin256-v2.yaml``) becomes

    OUT/unet/                  diffusers UNet2DConditionModel (save_pretrained)
    OUT/vqvae/                 diffusers VQModel, scaling_factor from the LDM config
    OUT/class_embedder.pth     the 1001 x 512 label table (ClassEmbedder checkpoint)
    OUT/conversion.json        source, parameter counts

which ``configs/2ndm_imagenet_ldm.py`` reads through its ``ldm_path`` variable:

    python tools/convert_compvis_ldm.py cin/model.ckpt cin/config.yaml checkpoints/ldm4-cin256
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.models.compvis_ldm import load_compvis_ldm, save_compvis_ldm  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(
        description='Convert a CompVis class-conditional LDM checkpoint to diffusers folders')
    parser.add_argument('checkpoint', help="the LDM's model.ckpt")
    parser.add_argument('config', help="the LDM's YAML config (e.g. cin256-v2.yaml)")
    parser.add_argument('out_dir', help='output folder (unet/, vqvae/, class_embedder.pth)')
    parser.add_argument('--extract-ema', action='store_true',
                        help='take the U-Net from the model_ema.* weights')
    return parser.parse_args()


def main() -> None:
    """Converts and writes the three parts and a summary."""
    args = parse_args()
    parts = load_compvis_ldm(args.checkpoint, args.config, extract_ema=args.extract_ema)
    save_compvis_ldm(parts, args.out_dir)
    summary = dict(
        source=osp.abspath(args.checkpoint),
        config=osp.abspath(args.config),
        extract_ema=args.extract_ema,
        params={name: sum(p.numel() for p in module.parameters())
                for name, module in parts.items()},
        class_embedder=dict(num_embeddings=parts['class_embedder'].num_embeddings,
                            embed_dim=parts['class_embedder'].embedding.embedding_dim))
    with open(osp.join(args.out_dir, 'conversion.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary, indent=2))


if __name__ == '__main__':
    main()
