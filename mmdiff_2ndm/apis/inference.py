"""A finished run's distiller outside the Runner, and sampling it into a folder of PNGs."""
import copy
import json
import math
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner.checkpoint import _load_checkpoint, load_state_dict
from torch import Tensor, nn
from torchvision.utils import make_grid
from tqdm import tqdm

from mmagic.registry import MODELS
from ..models.sampling import SAMPLE_MODELS
from ..pruning import prune_model

GRID_FILE = 'grid.png'
METADATA_FILE = 'samples.json'


def init_distiller(config: Union[str, Config],
                   checkpoint: Optional[str] = None,
                   device: Union[str, torch.device] = 'cpu',
                   cfg_options: Optional[dict] = None) -> Tuple[nn.Module, Optional[dict]]:
    """Builds the config's model and loads a run's checkpoint into it, pruned shapes included.

    What ``DiffusionPruningHook`` does on ``load_from``, without a Runner: the student is
    rebuilt from the checkpoint's pruning record (``meta['pruning']``), its EMA points at
    it, then the whole state dict loads strictly (teacher, student, EMA).

    Args:
        config (str | Config): The run's config (file or loaded).
        checkpoint (str, optional): The run's MMEngine checkpoint. Defaults to None (the
            model as the config builds it).
        device (str | torch.device): Where the model goes. Defaults to ``'cpu'``.
        cfg_options (dict, optional): Overrides merged into the config first.

    Returns:
        tuple: ``(model, record)``: the distiller in eval mode and the pruning record (None
        for a dense student).
    """
    cfg = Config.fromfile(config) if isinstance(config, str) else copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmagic'))
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    if checkpoint is not None and model_cfg.get('teacher_ckpt') is not None and \
            isinstance(model_cfg.get('teacher'), dict):
        # The run's checkpoint holds the teacher's weights too: build the architecture
        # only, so that the teacher file it started from need not exist any more.
        model_cfg['teacher'] = MODELS.build(model_cfg['teacher'])
        model_cfg['teacher_ckpt'] = None
    if checkpoint is not None:
        model_cfg.pop('student_ckpt', None)
    model = MODELS.build(model_cfg)
    record = None
    if checkpoint is not None:
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
        record = (ckpt.get('meta') or {}).get('pruning')
        if record is not None:
            # rebuilds the student, points the EMA at it, hands the record to the model
            prune_model(model, record=record)
        load_state_dict(model, ckpt.get('state_dict', ckpt), strict=True)
    return model.to(device).eval(), record


#: Weyl step between seeds (2^32 / golden ratio, odd): seeds s and s' share a generator
#: seed only between indices ``|s - s'| * SEED_STRIDE mod 2^32`` apart.
SEED_STRIDE = 0x9E3779B9


def index_seed(index: int, seed: int = 0) -> int:
    """The generator seed of sample ``index``: ``(index + seed * SEED_STRIDE) mod 2^32``.

    torch's CPU generator keeps only the low 32 bits of a seed, so the seed is folded into
    them (``seed << 32`` would be dropped); the indices of one seed never share a
    generator seed, and seed 0 seeds sample ``index`` with ``index``.
    """
    return (int(index) + int(seed) * SEED_STRIDE) & 0xFFFFFFFF


def index_noise(index: int, shape: Sequence[int], seed: int = 0) -> Tensor:
    """The initial noise (C, H, W) of sample ``index``: its own generator (seeded with
    :func:`index_seed`), so that any subset of indices, in any batches, draws the same
    noise per index."""
    gen = torch.Generator().manual_seed(index_seed(index, seed))
    return torch.randn(tuple(shape), generator=gen)


def sample_to_folder(model: nn.Module,
                     out_dir: str,
                     num: int,
                     sample_model: Optional[str] = None,
                     batch_size: int = 16,
                     seed: int = 0,
                     num_inference_steps: Optional[int] = None,
                     guidance_scale: Optional[float] = None,
                     labels: Optional[Sequence[int]] = None,
                     prompts: Optional[Sequence[str]] = None,
                     grid_size: int = 64,
                     progress: bool = True) -> List[str]:
    """Samples ``num`` images into ``out_dir/<index>.png`` (skipping files already there),
    then writes ``grid.png`` and ``samples.json`` (file -> label / prompt).

    Image ``i`` is drawn from :func:`index_noise` ``(i, seed)`` with label
    ``labels[i % len(labels)]`` (default ``i % num_classes``) or prompt
    ``prompts[i % len(prompts)]`` (default: the distiller's ``sample_prompts``). Batches
    cover fixed index blocks ``[k * batch_size, (k + 1) * batch_size)``, so a resumed run
    computes every image exactly as an uninterrupted one with the same batch size.

    Args:
        model (nn.Module): A ``DiffusionDistiller`` (see :func:`init_distiller`).
        out_dir (str): Output folder (created).
        num (int): Number of images.
        sample_model (str, optional): ``'orig'``, ``'ema'`` or ``'teacher'``. Defaults
            to None (the distiller's default: the EMA when it has one).
        batch_size (int): Images per sampling call. Defaults to 16.
        seed (int): Noise seed. Defaults to 0.
        num_inference_steps (int, optional): Defaults to the distiller's.
        guidance_scale (float, optional): Defaults to the distiller's.
        labels (Sequence[int], optional): Class labels cycled over the indices.
        prompts (Sequence[str], optional): Prompts cycled over the indices.
        grid_size (int): At most this many images in ``grid.png``. Defaults to 64.
        progress (bool): Show a progress bar (stderr). Defaults to True.

    Returns:
        list[str]: The paths of all ``num`` images.
    """
    if num < 1 or batch_size < 1:
        raise ValueError(f'num and batch_size must be >= 1, got {num} and {batch_size}.')
    if sample_model is not None and sample_model not in SAMPLE_MODELS:
        raise ValueError(f'sample_model must be one of {SAMPLE_MODELS}, got {sample_model!r}.')
    os.makedirs(out_dir, exist_ok=True)
    paths = [osp.join(out_dir, f'{i:06d}.png') for i in range(num)]
    conditions = _conditions(model, num, labels, prompts)
    shape = model.noise_fn(num_batches=1).shape[1:]
    bar = tqdm(total=num, desc=f'sampling {sample_model or "default"}', unit='img',
               disable=not progress)
    try:
        for start in range(0, num, batch_size):
            block = range(start, min(start + batch_size, num))
            todo = [i for i in block if not osp.isfile(paths[i])]
            bar.update(len(block) - len(todo))
            if not todo:
                continue
            noise = torch.stack([index_noise(i, shape, seed) for i in block])
            sample_kwargs = {}
            if num_inference_steps is not None:
                sample_kwargs['num_inference_steps'] = int(num_inference_steps)
            if guidance_scale is not None:
                sample_kwargs['guidance_scale'] = float(guidance_scale)
            if conditions is not None:
                key, values = conditions
                sample_kwargs[key] = [values[i] for i in block]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(index_seed(start, seed))  # stochastic schedulers
                outputs = model.generate(dict(noise=noise, sample_model=sample_model,
                                              sample_kwargs=sample_kwargs))
            for i, out in zip(block, outputs):
                if i in todo:
                    mmcv.imwrite(_to_uint8_hwc(out.fake_img), paths[i])
            bar.update(len(todo))
    finally:
        bar.close()
    _write_grid(paths[:grid_size], osp.join(out_dir, GRID_FILE))
    metadata = {osp.basename(p): {} for p in paths}
    if conditions is not None:
        key, values = conditions
        for path, value in zip(paths, values):
            metadata[osp.basename(path)] = {'label' if key == 'labels' else 'prompt': value}
    with open(osp.join(out_dir, METADATA_FILE), 'w', encoding='utf-8') as f:
        json.dump(dict(sample_model=sample_model, seed=seed, images=metadata), f, indent=1)
    return paths


def _conditions(model: nn.Module, num: int, labels: Optional[Sequence[int]],
                prompts: Optional[Sequence[str]]) -> Optional[Tuple[str, list]]:
    """``('labels', [...])``, ``('prompt', [...])`` per index, or None (unconditional)."""
    if model.text_encoder is not None:
        prompts = list(prompts or model.sample_prompts or [])
        if not prompts:
            raise ValueError('A text-conditioned distiller needs prompts: pass them '
                             '(--prompts / --prompt-file) or set model.sample_prompts.')
        return 'prompt', [prompts[i % len(prompts)] for i in range(num)]
    num_classes = model.num_classes
    if num_classes is None:
        if labels or prompts:
            raise ValueError('The model is unconditional; labels / prompts do not apply.')
        return None
    labels = [int(v) for v in labels] if labels else list(range(int(num_classes)))
    bad = [v for v in labels if not 0 <= v < int(num_classes)]
    if bad:
        raise ValueError(f'Labels {bad} are outside [0, {num_classes}).')
    return 'labels', [labels[i % len(labels)] for i in range(num)]


def _to_uint8_hwc(image: Tensor) -> 'numpy.ndarray':  # noqa: F821
    """A generated image (C, H, W) in [0, 255] (MMagic's BGR) as uint8 (H, W, C)."""
    return image.detach().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def _write_grid(paths: Sequence[str], grid_path: str) -> None:
    """A square-ish grid of the images at ``paths`` (read back, so resumed runs show all)."""
    images = [torch.from_numpy(mmcv.imread(p, flag='unchanged')) for p in paths]
    images = [img[..., None] if img.dim() == 2 else img for img in images]
    grid = make_grid(torch.stack(images).permute(0, 3, 1, 2),
                     nrow=max(1, math.ceil(math.sqrt(len(images)))), padding=2)
    mmcv.imwrite(grid.permute(1, 2, 0).numpy(), grid_path)
