"""Up-front check of the local files a config names (teachers, data, feature networks).

The configs name their teacher weights, data sets and FID networks by local paths (nothing
is downloaded). A missing one would otherwise surface deep inside diffusers, MMagic or a
data-loader worker, often as an offer to download; :func:`check_local_paths` lists every
missing path with its config key before anything is built.
"""
import os.path as osp
from typing import Iterator, List, Mapping, Sequence, Tuple

Missing = Tuple[str, str, str]  # (config key, path, what it should be)

# Keys whose string value is a local path, with what it should be.
_MODEL_FOLDERS = {'from_pretrained': 'diffusers model folder',
                  'text_encoder': 'text encoder folder', 'tokenizer': 'tokenizer folder'}
_MODEL_FILES = {'teacher_ckpt': 'checkpoint file', 'student_ckpt': 'checkpoint file',
                'checkpoint': 'checkpoint file'}
_METRIC_PATHS = {'inception_path': ('file', 'TorchScript feature network'),
                 'clip_path': ('folder', 'CLIP model folder')}


def _is_remote(path: str) -> bool:
    return '://' in path


def _model_paths(cfg, key: str) -> Iterator[Missing]:
    """Every path-valued entry of a model config, recursively."""
    if isinstance(cfg, Mapping):
        for name, value in cfg.items():
            where = f'{key}.{name}'
            if isinstance(value, str) and name in _MODEL_FOLDERS:
                folder = value
                subfolder = cfg.get('subfolder') if name == 'from_pretrained' else None
                if subfolder:
                    folder = osp.join(folder, subfolder)
                if not _is_remote(folder) and not osp.isdir(osp.expanduser(folder)):
                    yield where, folder, _MODEL_FOLDERS[name]
            elif name in _MODEL_FILES and isinstance(value, (str, Mapping)):
                path = value.get('filename') if isinstance(value, Mapping) else value
                if isinstance(path, str) and not _is_remote(path) and \
                        not osp.isfile(osp.expanduser(path)):
                    yield where, path, _MODEL_FILES[name]
            else:
                yield from _model_paths(value, where)
    elif isinstance(cfg, (list, tuple)):
        for i, value in enumerate(cfg):
            yield from _model_paths(value, f'{key}[{i}]')


def _dataset_paths(dataset, key: str) -> Iterator[Missing]:
    """The data roots (and annotation files) of a dataset config and its wrapped ones."""
    if not isinstance(dataset, Mapping):
        return
    for inner in ('dataset', 'datasets'):
        value = dataset.get(inner)
        if isinstance(value, Mapping):
            yield from _dataset_paths(value, f'{key}.{inner}')
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                yield from _dataset_paths(item, f'{key}.{inner}[{i}]')
    if dataset.get('download'):  # the dataset fetches itself
        return
    root = dataset.get('data_root')
    if isinstance(root, str) and root and not _is_remote(root):
        if not osp.isdir(osp.expanduser(root)):
            yield f'{key}.data_root', root, 'data set folder'
            return
        ann_file = dataset.get('ann_file')
        if isinstance(ann_file, str) and ann_file and not _is_remote(ann_file):
            path = ann_file if osp.isabs(ann_file) else osp.join(root, ann_file)
            if not osp.isfile(osp.expanduser(path)):
                yield f'{key}.ann_file', path, 'annotation file'


def _metric_paths(evaluator, key: str) -> Iterator[Missing]:
    """Feature-network and CLIP paths of an evaluator's metrics."""
    if not isinstance(evaluator, Mapping):
        return
    metrics = evaluator.get('metrics', [])
    metrics = [metrics] if isinstance(metrics, Mapping) else metrics
    for i, metric in enumerate(metrics or []):
        for name, (kind, what) in _METRIC_PATHS.items():
            path = metric.get(name) if isinstance(metric, Mapping) else None
            if not isinstance(path, str) or _is_remote(path):
                continue
            exists = osp.isfile if kind == 'file' else osp.isdir
            if not exists(osp.expanduser(path)):
                yield f'{key}.metrics[{i}].{name}', path, what


def missing_local_paths(cfg: Mapping, phases: Sequence[str] = ('train', 'val')) -> List[Missing]:
    """Local paths a config names that do not exist.

    Args:
        cfg (Mapping): The merged config (``--cfg-options`` applied).
        phases (Sequence[str]): Which loops will run: ``'train'``, ``'val'``,
            ``'test'``; only their data loaders and evaluators are checked.
            Defaults to ``('train', 'val')``.

    Returns:
        list[tuple[str, str, str]]: ``(config key, path, what it should be)``.
    """
    missing = list(_model_paths(cfg.get('model'), 'model'))
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and not _is_remote(load_from) and \
            not osp.isfile(osp.expanduser(load_from)):
        missing.append(('load_from', load_from, 'checkpoint file'))
    for phase in phases:
        if phase != 'train' and not cfg.get(f'{phase}_cfg'):
            continue  # that loop is switched off
        loader = cfg.get(f'{phase}_dataloader')
        if isinstance(loader, Mapping):
            missing.extend(_dataset_paths(loader.get('dataset'), f'{phase}_dataloader.dataset'))
        if phase != 'train':
            missing.extend(_metric_paths(cfg.get(f'{phase}_evaluator'), f'{phase}_evaluator'))
    return missing


def check_local_paths(cfg: Mapping, phases: Sequence[str] = ('train', 'val')) -> None:
    """Raises one error naming every missing local path of ``cfg`` (see
    :func:`missing_local_paths`).

    Raises:
        FileNotFoundError: When any path is missing; the message lists each config key,
            its path and what it should be, and how to fix it.
    """
    missing = missing_local_paths(cfg, phases)
    if not missing:
        return
    lines = '\n'.join(f'  {key} = {path!r}  ({what})' for key, path, what in missing)
    raise FileNotFoundError(
        f'The config names local files that do not exist:\n{lines}\n'
        'Put them there (each config header says where its teacher, data and FID network '
        'come from, e.g. a hub id to download once with `huggingface-cli download ID '
        '--local-dir PATH`), or point the keys elsewhere: --cfg-options KEY=/your/path '
        '(for a path variable used in several keys, override each key).')
