"""Tiny data sets in the on-disk formats the configs' dataset classes read.

CIFAR-10's python pickles, LSUN's LMDB and its image export, CelebA's aligned JPEGs,
ImageNet's folders and annotation file, COCO's caption json; a few generated images each.
Each writer takes ``paint(height, width) -> (H, W, 3) uint8 RGB`` for the pixels.
"""
import hashlib
import json
import os
import os.path as osp
import pickle
from typing import Sequence

import numpy as np
from PIL import Image

IMG = 12  # pixel side of every tiny image / model (SSIM, in TeacherFidelity, needs >= 11)
NUM_CLASSES = 3  # ImageNet-style tiny label set
PROMPTS = ('a red cat', 'a blue dog', 'green tree', 'a cat on a tree')


def random_rgb(seed: int = 0):
    """A painter of noisy images around one random colour per image."""
    rng = np.random.default_rng(seed)

    def paint(height: int, width: int) -> np.ndarray:
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.integers(-40, 40, (height, width, 3))
        return np.clip(base + noise, 0, 255).astype(np.uint8)
    return paint


def pure_red(height: int, width: int) -> np.ndarray:
    """RGB (255, 0, 0) everywhere."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 0] = 255
    return img


CIFAR10_FILES = ['data_batch_1', 'data_batch_2', 'data_batch_3', 'data_batch_4',
                 'data_batch_5', 'test_batch']


def write_images(folder: str, names: Sequence[str], seed: int = 0) -> None:
    """Writes small non-square RGB images (the pipelines crop and resize them)."""
    paint = random_rgb(seed)
    for name in names:
        path = osp.join(folder, name)
        os.makedirs(osp.dirname(path), exist_ok=True)
        Image.fromarray(paint(IMG + 2, IMG + 4)).save(path)


def write_cifar10(root: str, paint, per_batch: int = 2) -> dict:
    """CIFAR-10's python version: ``<root>/cifar-10-batches-py`` as in
    cifar-10-python.tar.gz (pickled dicts whose ``data`` is (N, 3072) uint8, each row the
    R, G and B planes of a 32x32 image, plus ``batches.meta``).

    Returns:
        dict: md5 of each file (MMagic's ``CIFAR10`` checks the real archive's md5s).
    """
    folder = osp.join(root, 'cifar-10-batches-py')
    os.makedirs(folder)
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
             'ship', 'truck']
    contents = {'batches.meta': dict(num_cases_per_batch=per_batch, label_names=names,
                                     num_vis=3072)}
    for name in CIFAR10_FILES:
        images = [paint(32, 32) for _ in range(per_batch)]
        contents[name] = dict(
            batch_label=f'{name} of 6', labels=[i % 10 for i in range(per_batch)],
            data=np.stack([img.transpose(2, 0, 1).reshape(-1) for img in images]),
            filenames=[f'{name}_{i}.png' for i in range(per_batch)])
    md5 = {}
    for name, content in contents.items():
        path = osp.join(folder, name)
        with open(path, 'wb') as f:
            pickle.dump(content, f, protocol=2)  # written by Python 2 originally
        with open(path, 'rb') as f:
            md5[name] = hashlib.md5(f.read()).hexdigest()
    return md5


def _webp(img: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format='WEBP', quality=90)
    return buffer.getvalue()


def write_lsun_lmdb(db_path: str, keys_file: str, paint, num: int = 4) -> list:
    """An LSUN category LMDB as released (``<category>_train_lmdb/data.mdb``): keys are
    40-character hex strings, values WebP images; plus the key list that
    ``2ndm_lsun_church_lmdb.py`` reads (one key per line).

    Returns:
        list[str]: The keys.
    """
    import lmdb
    keys = [hashlib.sha1(f'lsun{i}'.encode()).hexdigest() for i in range(num)]
    env = lmdb.open(db_path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key in keys:
            txn.put(key.encode('ascii'), _webp(paint(IMG + 4, IMG + 8)))
    env.close()
    with open(keys_file, 'w') as f:
        f.write('\n'.join(keys) + '\n')
    return keys


def write_lsun_export(folder: str, db_path: str) -> None:
    """What LSUN's ``data.py export`` writes from an LMDB: ``<k0>/<k1>/.../<k5>/<key>.webp``
    for each key (one folder level per leading character)."""
    import lmdb
    env = lmdb.open(db_path, readonly=True, lock=False)
    with env.begin() as txn:
        for key, value in txn.cursor():
            key = key.decode('ascii')
            out_dir = osp.join(folder, *key[:6])
            os.makedirs(out_dir, exist_ok=True)
            with open(osp.join(out_dir, key + '.webp'), 'wb') as f:
                f.write(value)
    env.close()


def write_celeba(folder: str, paint, num: int = 4) -> None:
    """CelebA's ``img_align_celeba``: 178x218 JPEGs named 000001.jpg, 000002.jpg, ..."""
    os.makedirs(folder)
    for i in range(1, num + 1):
        Image.fromarray(paint(218, 178)).save(osp.join(folder, f'{i:06d}.jpg'), quality=95)


def write_imagenet(root: str, paint, num_classes: int = NUM_CLASSES, per_class: int = 2,
                   split: str = 'train') -> None:
    """ImageNet-1k's ``<split>/<wnid>/<wnid>_<n>.JPEG`` plus ``meta/<split>.txt`` lines
    ``<wnid>/<file> <label>``."""
    lines = []
    for label in range(num_classes):
        wnid = f'n{1440764 + label:08d}'
        os.makedirs(osp.join(root, split, wnid))
        for n in range(per_class):
            name = f'{wnid}/{wnid}_{10026 + n}.JPEG'
            picture = Image.fromarray(paint(IMG + 2, IMG + 4))
            picture.save(osp.join(root, split, name), format='JPEG', quality=95)
            lines.append(f'{name} {label}')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


def write_coco_captions(root: str, paint, num: int = 4) -> None:
    """MS-COCO 2014: ``annotations/captions_{train,val}2014.json`` and the image folders
    ``{train,val}2014/COCO_<split>_<12-digit id>.jpg``, captions as in the release."""
    os.makedirs(osp.join(root, 'annotations'))
    for split in ('train2014', 'val2014'):
        ids = [9 + 16 * i for i in range(num)]  # real ids are sparse
        images = [dict(id=i, file_name=f'COCO_{split}_{i:012d}.jpg', height=IMG + 2,
                       width=IMG + 4, license=1, coco_url='', flickr_url='',
                       date_captured='2013-11-14 11:18:45') for i in ids]
        os.makedirs(osp.join(root, split))
        for image in images:
            Image.fromarray(paint(IMG + 2, IMG + 4)).save(
                osp.join(root, split, image['file_name']), quality=95)
        annotations = [dict(id=1000 * n + j, image_id=i, caption=PROMPTS[(n + j) % 4])
                       for n, i in enumerate(ids) for j in range(2)]
        ann = dict(info=dict(description='COCO 2014 Dataset'), licenses=[], images=images,
                   annotations=annotations)
        with open(osp.join(root, 'annotations', f'captions_{split}.json'), 'w') as f:
            json.dump(ann, f)


def write_data_formats(root: str, paint) -> dict:
    """Every on-disk format the configs read, a few images each, painted by ``paint``.

    Returns:
        dict: ``cifar10`` (the root holding cifar-10-batches-py; ``cifar10_md5``: its
        files' md5s), ``lsun_lmdb`` / ``lsun_lmdb_keys`` (database folder, key list),
        ``lsun_export`` (LSUN's WebP export of that database), ``celeba``
        (img_align_celeba), ``imagenet``, ``coco``.
    """
    out = dict(cifar10=osp.join(root, 'cifar10'),
               lsun_lmdb=osp.join(root, 'church_outdoor_train_lmdb'),
               lsun_lmdb_keys=osp.join(root, 'church_keys.txt'),
               lsun_export=osp.join(root, 'church_outdoor_train'),
               celeba=osp.join(root, 'celeba', 'img_align_celeba'),
               imagenet=osp.join(root, 'imagenet'), coco=osp.join(root, 'coco'))
    out['cifar10_md5'] = write_cifar10(out['cifar10'], paint)
    write_lsun_lmdb(out['lsun_lmdb'], out['lsun_lmdb_keys'], paint, num=8)
    write_lsun_export(out['lsun_export'], out['lsun_lmdb'])
    write_celeba(out['celeba'], paint, num=8)
    write_imagenet(out['imagenet'], paint, per_class=3)
    write_coco_captions(out['coco'], paint)
    return out
