"""The shipped digits teacher (checkpoints/digits/) is the file its record describes, loads
strictly as the configs load it, and scores as recorded.

``checkpoints/digits/teacher_digits16_ema.json`` was written by ``main()`` below
(``python tests/test_studies/test_digits/test_shipped_teacher.py``) right after the
checkpoint was made; regenerate it only with a new teacher, and say so in the commit.
"""
import hashlib
import json
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import mmdiff_2ndm  # noqa: F401  (registers the distiller and the digits data set)
from mmagic.registry import DATASETS, MODELS
from mmdiff_2ndm.studies.digits.runs import SHIPPED_TEACHER

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..', '..', '..'))
RECORD = osp.splitext(SHIPPED_TEACHER)[0] + '.json'
CHECK_TIMESTEPS = (0, 10, 50, 100, 250, 500, 750, 999)


def check_score() -> dict:
    """Loads the shipped teacher through configs/digits/2ndm_digits16.py (its default
    ``teacher_ckpt``) and scores its DSM loss on the first 64 test digits at fixed
    timesteps and noise (the distiller's ``pruning_loss``; the student is still its copy)."""
    init_default_scope('mmagic')  # the configs' scope: MMagic's PackInputs
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'digits', '2ndm_digits16.py'))
    assert osp.join(REPO, cfg.model.teacher_ckpt.filename) == SHIPPED_TEACHER
    model_cfg = cfg.model.to_dict()
    model_cfg['teacher_ckpt'] = dict(model_cfg['teacher_ckpt'], filename=SHIPPED_TEACHER)
    model = MODELS.build(model_cfg).eval()
    dataset = DATASETS.build(dict(type='SklearnDigits', image_size=16, split='test',
                                  pipeline=[dict(type='PackInputs', keys=['gt'])]))
    batch = pseudo_collate([dataset[i] for i in range(64)])
    losses = []
    for t in CHECK_TIMESTEPS:
        torch.manual_seed(t)
        with torch.no_grad():
            losses.append(float(model.pruning_loss(batch, torch.tensor(t))))
    params = sum(p.numel() for p in model.teacher.parameters())
    return dict(params=params, dsm_loss_by_t=dict(zip(map(str, CHECK_TIMESTEPS), losses)))


def test_shipped_teacher_is_recorded_and_scores_as_recorded():
    with open(RECORD) as f:
        record = json.load(f)
    with open(SHIPPED_TEACHER, 'rb') as f:
        assert hashlib.sha256(f.read()).hexdigest() == record['sha256']
    got = check_score()
    assert got['params'] == record['params'] == 177427
    for t, value in record['dsm_loss_by_t'].items():
        assert abs(got['dsm_loss_by_t'][t] - value) <= 1e-4 * abs(value), t
    # a trained eps-predictor: far below the ~768 of predicting zeros (3 x 16 x 16 pixels)
    assert max(record['dsm_loss_by_t'].values()) < 400


def main() -> None:
    with open(SHIPPED_TEACHER, 'rb') as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    record = dict(sha256=digest, **check_score())
    if osp.exists(RECORD):  # keep the hand-written fields (provenance, proxy FID)
        with open(RECORD) as f:
            record = dict(json.load(f), **record)
    with open(RECORD, 'w') as f:
        json.dump(record, f, indent=1)
    print(json.dumps(record, indent=1))


if __name__ == '__main__':
    main()


def test_study_uses_the_shipped_teacher_unless_told_to_train(tmp_path):
    import importlib.util
    from mmdiff_2ndm.studies.digits import Study
    spec = importlib.util.spec_from_file_location(
        'digits_study', osp.join(REPO, 'tools', 'digits_study.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for preset, argv, expected in (
            ('short', [], SHIPPED_TEACHER), ('full', [], SHIPPED_TEACHER),
            ('short', ['--train-teacher'], str(tmp_path / 'teacher' / 'iter_6000.pth')),
            ('tiny', [], str(tmp_path / 'teacher' / 'iter_4.pth'))):
        args = tool.parse_args(['--preset', preset, *argv])
        study = Study(preset, str(tmp_path), [], 1, args.train_teacher)
        assert study.teacher_ckpt == expected, (preset, argv)
        assert study.options('dsm_kd', 0)[0] == f'model.teacher_ckpt.filename={expected}'
