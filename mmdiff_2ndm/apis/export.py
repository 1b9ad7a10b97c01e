"""The pruned student as a self-contained diffusers folder, and loading it back.

A pruned student has non-uniform widths, which no diffusers ``config.json`` can describe.
The folder follows the diffusers pipeline layout and keeps what rebuilds it exactly:

* ``unet/`` (``transformer/`` for DiT): ``config.json``, the *dense* diffusers config the
  student was pruned from; ``pruning_record.json``, the pruning record (absent for a
  dense student), replayed on the dense model by :func:`mmdiff_2ndm.pruning.rebuild_pruned`;
  ``diffusion_pytorch_model.safetensors``, the student's (pruned) weights. A DiT pruned
  in depth only (whole blocks, no channels) is a plain shallower DiT: its
  ``config.json`` is the real one (``num_layers`` = kept blocks, weights numbered
  0..N-1), so ``DiTTransformer2DModel.from_pretrained`` loads it without this plugin
  (the record stays beside it for provenance; replaying it there changes nothing);
* ``scheduler/scheduler_config.json``: the distiller's sampling scheduler;
* ``vae/``, ``text_encoder/``, ``tokenizer/``: the frozen parts of latent / text models,
  as diffusers / transformers save them, so a pipeline needs nothing else;
* ``model_index.json``: for a dense or depth-only pruned latent DiT, ``DiTPipeline``'s
  index (``DiTPipeline.from_pretrained(folder)``); for a text-conditional latent UNet
  (Stable Diffusion), the diffusers pipeline index, so that
  ``StableDiffusionPipeline.from_pretrained(folder, unet=load_student(folder))`` loads
  the rest (no safety checker nor feature extractor;
  the pipeline forces ``steps_offset=1`` and ``clip_sample=False`` on the scheduler, so a
  scheduler with other values must be set on the pipeline after loading);
* ``mmdiff_2ndm.json``: what was exported (model, subfolder, steps, guidance, classes,
  source).

The student lives in a subfolder because diffusers' ``from_pretrained(folder,
subfolder='vae')`` prefers weights at the folder's top level over the subfolder's.
"""
import json
import os
import os.path as osp
from typing import List, Optional, Union

import torch
from torch import nn
from tqdm import tqdm

from ..models.denoisers import unwrap_denoiser
from ..models.sampling import STUDENT_MODELS
from ..pruning import check_record, rebuild_pruned

WEIGHTS_NAME = 'diffusion_pytorch_model.safetensors'
RECORD_NAME = 'pruning_record.json'
MANIFEST_NAME = 'mmdiff_2ndm.json'
PIPELINE_INDEX_NAME = 'model_index.json'
EXPORT_FORMAT = 'mmdiff_2ndm.student/v1'


def export_student(model: nn.Module,
                   out_dir: str,
                   record: Optional[dict] = None,
                   sample_model: str = 'ema',
                   source: Optional[dict] = None,
                   progress: bool = True) -> str:
    """Writes the distiller's student (or its EMA) as a self-contained folder (module doc).

    Args:
        model (nn.Module): A ``DiffusionDistiller`` with a diffusers student.
        out_dir (str): Output folder (created; existing files are overwritten).
        record (dict, optional): The student's pruning record (``init_distiller``
            returns it). None for a dense student.
        sample_model (str): ``'ema'`` (falls back to the student without an EMA) or
            ``'orig'``. Defaults to ``'ema'``.
        source (dict, optional): Extra provenance for the manifest (config, checkpoint).
        progress (bool): Show a progress bar over the parts written. Defaults to True.

    Returns:
        str: ``out_dir``.
    """
    if sample_model not in STUDENT_MODELS:
        raise ValueError(f'sample_model must be one of {STUDENT_MODELS}, got {sample_model!r}.')
    from diffusers import ModelMixin
    from safetensors.torch import save_file
    ema = getattr(model, 'student_ema', None)
    exported = 'ema' if sample_model == 'ema' and ema is not None else 'orig'
    net = unwrap_denoiser(ema.module if exported == 'ema' else model.student)
    if not isinstance(net, ModelMixin):
        raise TypeError(f'Export writes diffusers models; the student is a '
                        f'{type(net).__name__}.')
    if record is not None:
        check_record(record)
    subfolder = 'transformer' if 'Transformer' in type(net).__name__ else 'unet'
    student_dir = osp.join(out_dir, subfolder)
    os.makedirs(student_dir, exist_ok=True)
    parts = [('config', lambda: _save_config(net, student_dir, record)),
             ('weights', lambda: save_file(
                 {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()},
                 osp.join(student_dir, WEIGHTS_NAME), metadata={'format': 'pt'})),
             ('scheduler', lambda: model.test_scheduler.save_config(
                 osp.join(out_dir, 'scheduler')))]
    record_path = osp.join(student_dir, RECORD_NAME)
    if record is not None:
        parts.append(('pruning record', lambda: _dump_json(record, record_path)))
    elif osp.exists(record_path):
        os.remove(record_path)  # a dense export over an old pruned one
    for name in ('vae', 'text_encoder', 'tokenizer'):
        part = getattr(model, name)
        if part is not None:
            part = unwrap_denoiser(part) if isinstance(part, nn.Module) else part
            parts.append((name, lambda p=part, n=name: p.save_pretrained(osp.join(out_dir, n))))
    index_path = osp.join(out_dir, PIPELINE_INDEX_NAME)
    index = _pipeline_index(model, net, subfolder) or _dit_pipeline_index(model, net, record)
    if index is not None:
        parts.append(('pipeline index', lambda: _dump_json(index, index_path)))
    elif osp.exists(index_path):
        os.remove(index_path)  # e.g. an unconditional export over a text-conditional one
    manifest = dict(format=EXPORT_FORMAT, sample_model=exported, subfolder=subfolder,
                    family=type(net).__name__,
                    pruned=record is not None,
                    num_inference_steps=int(model.num_inference_steps),
                    guidance_scale=float(model.guidance_scale),
                    num_classes=model.num_classes, source=source or {})
    parts.append(('manifest', lambda: _dump_json(manifest, osp.join(out_dir, MANIFEST_NAME))))
    for _, write in tqdm(parts, desc='export', unit='part', disable=not progress):
        write()
    return out_dir


def load_student(folder: str,
                 device: Union[str, torch.device, None] = None,
                 dtype: Optional[torch.dtype] = None) -> nn.Module:
    """Loads a student written by :func:`export_student` as a diffusers model.

    The dense model is built from ``config.json``, the pruning record replayed on it, and
    the weights loaded strictly; the result is ready for diffusers pipelines, e.g.
    ``DDIMPipeline(unet=load_student(d), scheduler=DDIMScheduler.from_pretrained(d,
    subfolder='scheduler'))``, ``DiTPipeline`` (with ``vae/``) or
    ``StableDiffusionPipeline`` (with ``vae/``, ``text_encoder/``, ``tokenizer/``).

    Args:
        folder (str): The exported folder, or its ``unet/`` / ``transformer/``.
        device (str | torch.device, optional): Where to put the model. Defaults to None
            (CPU).
        dtype (torch.dtype, optional): Cast the weights (e.g. ``torch.float16``).
            Defaults to None (as saved).

    Returns:
        nn.Module: The diffusers model (``UNet2DModel``, ``DiTTransformer2DModel``,
        ``UNet2DConditionModel``, ...) in eval mode.
    """
    import diffusers
    from safetensors.torch import load_file
    folder = _student_folder(folder)
    config_path = osp.join(folder, 'config.json')
    if not osp.isfile(config_path):
        raise FileNotFoundError(f'{folder!r} holds no config.json; export it with '
                                'tools/export.py CONFIG CHECKPOINT OUT.')
    with open(config_path, encoding='utf-8') as f:
        class_name = json.load(f).get('_class_name')
    cls = getattr(diffusers, str(class_name), None)
    if cls is None:
        raise ValueError(f'config.json names class {class_name!r}, which diffusers '
                         f'{diffusers.__version__} does not have.')
    net = cls.from_config(cls.load_config(folder))
    record_path = osp.join(folder, RECORD_NAME)
    if osp.isfile(record_path):
        with open(record_path, encoding='utf-8') as f:
            rebuild_pruned(net, json.load(f))
    net.load_state_dict(load_file(osp.join(folder, WEIGHTS_NAME)), strict=True)
    net.eval()
    if device is not None or dtype is not None:
        net.to(device=device, dtype=dtype)
    return net


def is_depth_only(record: Optional[dict]) -> bool:
    """Whether ``record`` removes whole blocks and no channels: the student is then a
    plain, shallower model of its class, which an ordinary diffusers config describes."""
    return record is not None and record.get('depth') is not None and not record['history']


def _save_config(net: nn.Module, folder: str, record: Optional[dict]) -> None:
    """Writes ``config.json``: the dense config, or for a depth-only pruned DiT the real
    one (``num_layers`` = kept blocks), which diffusers loads without this plugin."""
    if not is_depth_only(record):
        net.save_config(folder)
        return
    if 'num_layers' not in net.config:
        raise ValueError(f'{type(net).__name__} has no num_layers in its config; a '
                         'depth-pruned export needs one.')
    config = json.loads(net.to_json_string())
    config['num_layers'] = len(record['depth']['kept'])
    _dump_json(config, osp.join(folder, 'config.json'))


def _dit_pipeline_index(model: nn.Module, net: nn.Module,
                        record: Optional[dict]) -> Optional[dict]:
    """``DiTPipeline``'s ``model_index.json`` for a latent DiT whose exported config
    describes it (dense or depth-only pruned), so that ``DiTPipeline.from_pretrained``
    loads the folder with no plugin; None otherwise."""
    import diffusers
    vae = getattr(model, 'vae', None)
    if type(net).__name__ != 'DiTTransformer2DModel' or vae is None or \
            (record is not None and not is_depth_only(record)):
        return None
    scheduler = getattr(model.test_scheduler, 'scheduler', model.test_scheduler)
    return dict(_class_name='DiTPipeline', _diffusers_version=diffusers.__version__,
                transformer=_library_class(net), vae=_library_class(unwrap_denoiser(vae)),
                scheduler=_library_class(scheduler))


def _student_folder(folder: str) -> str:
    """The folder holding the student's ``config.json`` (the export or its subfolder)."""
    if osp.isfile(osp.join(folder, 'config.json')):
        return folder
    manifest_path = osp.join(folder, MANIFEST_NAME)
    if osp.isfile(manifest_path):
        with open(manifest_path, encoding='utf-8') as f:
            return osp.join(folder, json.load(f).get('subfolder', 'unet'))
    for subfolder in ('unet', 'transformer'):
        if osp.isfile(osp.join(folder, subfolder, 'config.json')):
            return osp.join(folder, subfolder)
    return folder


def _pipeline_index(model: nn.Module, net: nn.Module, subfolder: str) -> Optional[dict]:
    """The ``model_index.json`` of a Stable Diffusion folder, None for other students.

    Args:
        model (nn.Module): The distiller.
        net (nn.Module): The exported student (unwrapped).
        subfolder (str): The student's subfolder.

    Returns:
        dict | None: ``StableDiffusionPipeline``'s index (each part as ``[library,
        class]``; safety checker and feature extractor ``[null, null]``) when the student
        is a ``UNet2DConditionModel`` with a VAE, text encoder and tokenizer; else None.
    """
    import diffusers
    parts = dict(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer)
    if type(net).__name__ != 'UNet2DConditionModel' or subfolder != 'unet' or \
            any(part is None for part in parts.values()):
        return None
    parts = {name: unwrap_denoiser(part) if isinstance(part, nn.Module) else part
             for name, part in parts.items()}
    # MMagic's SchedulerWrapper holds the diffusers scheduler as `.scheduler`
    scheduler = getattr(model.test_scheduler, 'scheduler', model.test_scheduler)
    parts.update(unet=net, scheduler=scheduler)
    index = dict(_class_name='StableDiffusionPipeline',
                 _diffusers_version=diffusers.__version__)
    for name, part in sorted(parts.items()):
        index[name] = _library_class(part)
    index.update(safety_checker=[None, None], feature_extractor=[None, None],
                 requires_safety_checker=False)
    return index


def _library_class(part: object) -> List[str]:
    """``[library, class]`` of the nearest diffusers / transformers class of ``part``."""
    for cls in type(part).__mro__:
        library = cls.__module__.split('.')[0]
        if library in ('diffusers', 'transformers'):
            return [library, cls.__name__]
    raise TypeError(f'{type(part).__name__} is no diffusers / transformers class; a '
                    'pipeline cannot load it.')


def _dump_json(data: dict, path: str) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f, indent=1)
