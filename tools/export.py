"""Export a run's (pruned) student as a self-contained diffusers folder.

Examples:
    python tools/export.py configs/digits/2ndm_digits16.py work_dirs/x/iter_600.pth \
        work_dirs/x/student
    python tools/export.py CONFIG CKPT OUT --model orig      # the raw student, not its EMA

Then, in Python (no MMEngine needed)::

    import mmdiff_2ndm
    from diffusers import DDIMPipeline, DDIMScheduler
    unet = mmdiff_2ndm.load_student(OUT)
    scheduler = DDIMScheduler.from_pretrained(OUT, subfolder='scheduler')
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

from mmengine.config import DictAction

# The tools work from a source checkout without installing the package.
sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..'))
from mmdiff_2ndm.apis import export_student, init_distiller  # noqa: E402
from mmdiff_2ndm.models.sampling import STUDENT_MODELS  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parses the command line."""
    parser = argparse.ArgumentParser(description='Export the student as a diffusers folder')
    parser.add_argument('config', help='the run\'s config file')
    parser.add_argument('checkpoint', help='the run\'s checkpoint')
    parser.add_argument('out', help='output folder')
    parser.add_argument('--model', choices=list(STUDENT_MODELS), default='ema',
                        help='export the student\'s EMA (default; the student without one) '
                        'or the raw student')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> str:
    """Exports the student; returns the output folder."""
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint {args.checkpoint!r} does not exist.')
    model, record = init_distiller(args.config, args.checkpoint, 'cpu', args.cfg_options)
    source = dict(config=osp.abspath(args.config) if isinstance(args.config, str) else None,
                  checkpoint=osp.abspath(args.checkpoint))
    export_student(model, args.out, record, sample_model=args.model, source=source)
    print(f'Student written to {args.out} (load it with mmdiff_2ndm.load_student)')
    return args.out


if __name__ == '__main__':
    main()
