"""Sample images from a finished run: PNGs, a grid, and the label / prompt of each file.

Examples:
    python tools/sample.py configs/digits/2ndm_digits16.py work_dirs/x/iter_600.pth \
        --num 500 --out work_dirs/x/samples
    python tools/sample.py CONFIG CKPT --num 64 --out DIR --model teacher --steps 50
    python tools/sample.py CONFIG CKPT --num 16 --out DIR --labels 1 207 360     # DiT / LDM
    python tools/sample.py CONFIG CKPT --num 8 --out DIR --prompts "a red cat" "a dog"

Image ``i`` comes from its own noise (seeded by ``--seed`` and ``i``), so an interrupted run
resumes where it stopped: files already in DIR are skipped, and the others come out as they
would have (keep ``--batch-size``).
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

# The tools work from a source checkout without installing the package.
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.apis import init_distiller, sample_to_folder  # noqa: E402
from mmdiff_2ndm.models.sampling import SAMPLE_MODELS  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description='Sample images from a trained distiller')
    parser.add_argument('config', help='the run\'s config file')
    parser.add_argument('checkpoint', help='the run\'s checkpoint')
    parser.add_argument('--num', type=int, required=True, help='number of images')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--model', choices=list(SAMPLE_MODELS), default=None,
                        help='sample the raw student, its EMA or the teacher '
                        '(default: the EMA when the run has one)')
    parser.add_argument('--batch-size', type=int, default=16, help='images per call')
    parser.add_argument('--seed', type=int, default=0, help='noise seed')
    parser.add_argument('--steps', type=int, default=None,
                        help='sampling steps (default: the config\'s num_inference_steps)')
    parser.add_argument('--guidance-scale', type=float, default=None,
                        help='classifier-free guidance scale (default: the config\'s)')
    parser.add_argument('--labels', type=int, nargs='+', default=None,
                        help='class labels, cycled over the images (default: 0, 1, ...)')
    parser.add_argument('--prompts', nargs='+', default=None,
                        help='prompts, cycled (default: the config\'s sample_prompts)')
    parser.add_argument('--prompt-file', default=None, help='a text file, one prompt a line')
    parser.add_argument('--device', default=None, help='default: cuda if available, else cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Samples ``--num`` images into ``--out``; returns their paths."""
    import torch
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint {args.checkpoint!r} does not exist.')
    prompts = args.prompts
    if args.prompt_file:
        with open(args.prompt_file, encoding='utf-8') as f:
            prompts = [line.strip() for line in f if line.strip()]
    device = args.device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model, _ = init_distiller(args.config, args.checkpoint, device, args.cfg_options)
    paths = sample_to_folder(model, args.out, args.num, sample_model=args.model,
                             batch_size=args.batch_size, seed=args.seed,
                             num_inference_steps=args.steps,
                             guidance_scale=args.guidance_scale, labels=args.labels,
                             prompts=prompts)
    print(f'{len(paths)} images and grid.png in {args.out}')
    return paths


if __name__ == '__main__':
    main()
