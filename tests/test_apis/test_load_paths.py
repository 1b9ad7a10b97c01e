"""Every path that loads weights is strict: a missing or an extra key raises, naming it
(the distiller on a Runner's non-strict load, teacher_ckpt / student_ckpt,
init_distiller, load_student, the class table, transformers folders); and the apis'
options that no tool test reaches."""
import os.path as osp

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file, save_file

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller)
from mmagic.registry import MODELS
from mmdiff_2ndm.apis import index_noise, init_distiller, load_student
from mmdiff_2ndm.apis.export import WEIGHTS_NAME
from mmdiff_2ndm.models.compvis_ldm import ClassEmbedder
from mmdiff_2ndm.utils.state_dict import check_keys, from_pretrained_strictly

from helpers.distiller_assets import dsm_distiller_cfg

pytestmark = pytest.mark.usefixtures('single_thread')

KEY = 'conv_in.bias'  # a key every tiny U-Net has
MISSING = r'1 missing key\(s\)'
EXTRA = r'1 unexpected key\(s\)'


@pytest.fixture(scope='module')
def unet_folder(tmp_path_factory) -> str:
    torch.manual_seed(0)
    folder = str(tmp_path_factory.mktemp('unet'))
    UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                block_out_channels=(8, 16), norm_num_groups=4,
                down_block_types=('DownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'UpBlock2D')).save_pretrained(folder)
    return folder


def _missing_and_extra(state: dict, key: str) -> list:
    """(state without ``key``, state with one more key)."""
    missing = {k: v for k, v in state.items() if k != key}
    extra = dict(state, **{'unknown.weight': torch.zeros(1)})
    return [(missing, MISSING), (extra, EXTRA)]


def test_check_keys_names_missing_and_unexpected():
    check_keys(['a', 'b'], {'p.a': 0, 'p.b': 0, 'q.c': 0}, prefix='p.')  # other prefixes pass
    with pytest.raises(ValueError, match=r"1 missing key\(s\) \(p\.b\) and 1 unexpected "
                                         r"key\(s\) \(p\.c\)\. fix it"):
        check_keys(['a', 'b'], {'p.a': 0, 'p.c': 0}, prefix='p.', hint='fix it')


def test_distiller_refuses_missing_and_extra_keys_on_a_lenient_load(unet_folder):
    """MMEngine's Runner loads with strict=False; the distiller refuses what does not fit."""
    model = MODELS.build(dsm_distiller_cfg(unet_folder))
    for state, message in _missing_and_extra(model.state_dict(), f'student.model.{KEY}'):
        with pytest.raises(ValueError, match=message + '.*checkpoint of this config'):
            model.load_state_dict(state, strict=False)


@pytest.mark.parametrize('role', ['teacher_ckpt', 'student_ckpt'])
def test_model_checkpoints_refuse_missing_and_extra_keys(unet_folder, tmp_path, role):
    state = UNet2DModel.from_pretrained(unet_folder).state_dict()
    net = dict(type='UNet2DModel', from_config=unet_folder)
    for index, (weights, _) in enumerate(_missing_and_extra(state, KEY)):
        path = str(tmp_path / f'{index}.pth')
        torch.save(dict(state_dict=weights), path)
        overrides = {role: path, role.split('_')[0]: net}
        with pytest.raises(RuntimeError, match='missing keys|unexpected key'):
            MODELS.build(dsm_distiller_cfg(unet_folder, **overrides))


@pytest.fixture(scope='module')
def config(unet_folder, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp('config') / 'config.py')
    with open(path, 'w') as f:
        f.write(f'model = {dsm_distiller_cfg(unet_folder, num_inference_steps=3)!r}\n')
    return path


def test_init_distiller_refuses_missing_and_extra_keys(config, tmp_path):
    model, _ = init_distiller(config)
    for index, (state, message) in enumerate(
            _missing_and_extra(model.state_dict(), f'student.model.{KEY}')):
        path = str(tmp_path / f'{index}.pth')
        torch.save(dict(state_dict=state), path)
        with pytest.raises(ValueError, match=message):
            init_distiller(config, path)


def test_init_distiller_options(config):
    model, record = init_distiller(config, device='meta',
                                   cfg_options={'model.num_inference_steps': 5})
    assert record is None and model.num_inference_steps == 5
    assert next(model.student.parameters()).device.type == 'meta'


@pytest.fixture
def exported(unet_folder, tmp_path) -> str:
    """A dense export: config.json and the weights (what export_student writes)."""
    folder = str(tmp_path / 'unet')
    net = UNet2DModel.from_pretrained(unet_folder)
    net.save_config(folder)
    save_file(net.state_dict(), osp.join(folder, WEIGHTS_NAME))
    return folder


def test_load_student_refuses_missing_and_extra_keys(exported):
    path = osp.join(exported, WEIGHTS_NAME)
    for state, _ in _missing_and_extra(load_file(path), KEY):
        save_file(state, path)
        with pytest.raises(RuntimeError, match='Missing key|Unexpected key'):
            load_student(exported)


def test_load_student_device_and_dtype(exported):
    net = load_student(exported, device='meta', dtype=torch.float16)
    weight = next(net.parameters())
    assert weight.device.type == 'meta' and weight.dtype == torch.float16


def test_index_noise_seed():
    """Seed 3 draws other noise than seed 0 (torch's CPU generator keeps the low 32 bits of
    its seed: the seed is folded into them), seed 0 seeds index i with i."""
    def randn(generator_seed: int) -> torch.Tensor:
        return torch.randn((1, 2), generator=torch.Generator().manual_seed(generator_seed))

    torch.testing.assert_close(index_noise(2, (1, 2), seed=3),
                               randn((2 + 3 * 0x9E3779B9) % 2 ** 32), rtol=0, atol=0)
    torch.testing.assert_close(index_noise(2, (1, 2)), randn(2), rtol=0, atol=0)
    assert not torch.equal(index_noise(2, (1, 2), seed=3), index_noise(2, (1, 2)))


def test_class_table_refuses_missing_and_extra_keys(tmp_path):
    table = torch.randn(3, 4)
    for index, state in enumerate([{'other.weight': table},
                                   {'embedding.weight': table, 'other.weight': table}]):
        path = str(tmp_path / f'{index}.pth')
        torch.save(state, path)
        with pytest.raises(ValueError, match='class table of shape None' if index == 0
                           else r'1 other key\(s\): other\.weight'):
            ClassEmbedder(num_embeddings=3, embed_dim=4, checkpoint=path)


def test_transformers_folders_refuse_missing_and_extra_keys(tiny_clip, tmp_path):
    from transformers import CLIPModel, CLIPTextModel
    from_pretrained_strictly(CLIPModel, tiny_clip, 'clip_path')
    # a whole CLIPModel folder as the text encoder: its other towers are left out on purpose
    from_pretrained_strictly(CLIPTextModel, tiny_clip, 'text_encoder',
                             allow_unexpected=lambda key: not key.startswith('text_model.'))
    with pytest.raises(ValueError, match=r'text_encoder .* unexpected key\(s\) \(logit_scale'):
        from_pretrained_strictly(CLIPTextModel, tiny_clip, 'text_encoder')
    model = CLIPModel.from_pretrained(tiny_clip)
    state = model.state_dict()
    for index, (weights, message) in enumerate(
            _missing_and_extra(state, 'text_model.final_layer_norm.bias')):
        folder = str(tmp_path / str(index))
        model.save_pretrained(folder, state_dict=weights)
        with pytest.raises(ValueError, match=f'clip_path .* {message}'):
            from_pretrained_strictly(CLIPModel, folder, 'clip_path')
