"""A run's checkpoint given as ``teacher_ckpt`` / ``student_ckpt`` without the key prefix
of the network in it fails with one line that names the prefix to write."""
import re

import pytest
import torch

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.denoisers import unwrap_denoiser
from mmdiff_2ndm.pruning import check_state_dict_shapes, prune_denoiser
from mmdiff_2ndm.pruning.record import key_prefixes, parameter_shapes

from helpers.distiller_assets import dsm_distiller_cfg as _model

pytestmark = pytest.mark.usefixtures('single_thread')

EMA = 'student_ema.module.model.'


@pytest.fixture(scope='module')
def run_ckpt(tmp_path_factory, unet2d_folder) -> str:
    """A checkpoint as a teacher-training run writes it: ``student.model.*`` and
    ``student_ema.module.model.*`` (different weights), no teacher."""
    model = MODELS.build(_model(unet2d_folder))
    with torch.no_grad():
        for p in model.student_ema.module.parameters():
            p.add_(0.1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith('teacher.')}
    path = str(tmp_path_factory.mktemp('run') / 'iter_6000.pth')
    torch.save(dict(state_dict=state), path)
    return path


@pytest.mark.parametrize('given', [None, 'student_ema.', 'student'])
def test_teacher_ckpt_without_its_prefix_names_the_prefix_to_write(unet2d_folder, run_ckpt,
                                                                   given):
    ckpt = run_ckpt if given is None else dict(filename=run_ckpt, prefix=given)
    teacher = dict(type='UNet2DModel', from_config=unet2d_folder)
    with pytest.raises(ValueError) as error:
        MODELS.build(_model(unet2d_folder, teacher=teacher, teacher_ckpt=ckpt))
    message = str(error.value)
    assert '\n' not in message
    assert re.search(r"found 'student\.model\.' \(fits\), 'student_ema\.module\.model\.' "
                     r"\(fits\); 'student_ema\.module\.model\.' fits", message), message
    assert message.endswith(f"write teacher_ckpt=dict(filename={run_ckpt!r}, "
                            f"prefix='{EMA}').")

    # what the message says to write loads the EMA's weights
    model = MODELS.build(_model(unet2d_folder, teacher=teacher,
                                teacher_ckpt=dict(filename=run_ckpt, prefix=EMA)))
    saved = torch.load(run_ckpt, map_location='cpu', weights_only=True)['state_dict']
    for key, value in unwrap_denoiser(model.teacher).state_dict().items():
        assert torch.equal(value, saved[EMA + key]), key


def test_student_ckpt_prefix_hint_prefers_the_shapes_that_fit(tmp_path, unet2d_folder):
    """A pruned run: the student and its EMA are pruned, only the teacher fits a dense
    student."""
    model = MODELS.build(_model(unet2d_folder))
    prune_denoiser(model.student, 0.5, 'magnitude', with_macs=False)
    model.build_student_ema()
    path = str(tmp_path / 'pruned.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    student = dict(type='UNet2DModel', from_config=unet2d_folder)
    with pytest.raises(ValueError, match=re.escape(
            "found 'teacher.model.' (fits), 'student.model.' (other shapes), "
            "'student_ema.module.model.' (other shapes); 'teacher.model.' fits: write "
            f"student_ckpt=dict(filename={path!r}, prefix='teacher.model.').")):
        MODELS.build(_model(unet2d_folder, student=student, student_ckpt=path))


def test_key_prefixes_need_every_tensor(unet2d_folder):
    from diffusers import UNet2DModel
    net = UNet2DModel.from_pretrained(unet2d_folder)
    expected = parameter_shapes(net)
    state = {f'a.{k}': v for k, v in net.state_dict().items()}
    state.update({f'b.c.{k}': torch.zeros(1) for k in net.state_dict()})
    partial = sorted(net.state_dict())[1:]
    state.update({f'd.{k}': net.state_dict()[k] for k in partial})
    assert key_prefixes(expected, state) == {'a.': True, 'b.c.': False}
    assert key_prefixes(expected, net.state_dict()) == {'': True}


def test_shape_check_of_a_state_dict_under_another_prefix_raises(unet2d_folder):
    from diffusers import UNet2DModel
    net = UNet2DModel.from_pretrained(unet2d_folder)
    state = {f'student.model.{k}': v for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=r"none of the model's \d+ tensors under 'root', but "
                                         r"all of them .*'student\.model\.' \(fits\)"):
        check_state_dict_shapes(net, state)
    check_state_dict_shapes(net, state, prefix='student.model.')
    # a state dict holding other tensors only is still no error here (nothing to compare)
    check_state_dict_shapes(net, {'other.weight': torch.zeros(1)})
