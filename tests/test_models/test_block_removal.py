"""BK-SDM block-removal students (mmdiff_2ndm.models.block_removal) on a tiny SD-like U-Net.

The tiny teacher has SD 1.x's layout (four stages, CrossAttn x3 + plain innermost down
blocks, the mirror for the up blocks, layers_per_block=2) at 8-16 channels.
"""
import copy

import pytest
import torch
from torch import nn

import mmdiff_2ndm  # noqa: F401  (registers BKSDMStudent)
from mmdiff_2ndm.models.block_removal import (VARIANTS, block_removed_config,
                                              block_removed_unet, copy_teacher_weights,
                                              teacher_key)
from mmdiff_2ndm.models.denoisers import unwrap_denoiser

from helpers.denoisers import SD_TYPES, TINY_SD

TEXT_LEN = 5


pytestmark = pytest.mark.usefixtures('single_thread')  # tests/conftest.py


@pytest.fixture(scope='module')
def teacher() -> nn.Module:
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    net = UNet2DConditionModel(**TINY_SD).eval()
    # diffusers zero-initialises nothing here, but make sure that every tensor is distinct
    # (random), so that "equal to the teacher's tensor" identifies the source module.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return net


def _inputs(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    t = torch.tensor([3, 700])
    text = torch.randn(2, TEXT_LEN, 8, generator=gen)
    return x, t, text


def _params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _same(a: nn.Module, b: nn.Module) -> int:
    """Asserts two modules hold exactly equal tensors; returns how many were compared."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape, key
        assert torch.equal(sa[key], sb[key]), key
    return len(sa)


# ------------------------------------------------------------------ the authors' layouts
# src/unet_config/bk_{base,small,tiny}/config.json of github.com/Nota-NetsPresso/BK-SDM
# and the U-Net sizes of its MODEL_CARD.md (SD 1.4 teacher: 0.86B).
BK_SDM = {
    'base': dict(layers_per_block=1, mid_block_type='UNetMidBlock2DCrossAttn',
                 block_out_channels=[320, 640, 1280, 1280], params=0.58,
                 down_block_types=list(SD_TYPES['down_block_types']),
                 up_block_types=list(SD_TYPES['up_block_types'])),
    'small': dict(layers_per_block=1, mid_block_type=None,
                  block_out_channels=[320, 640, 1280, 1280], params=0.49,
                  down_block_types=list(SD_TYPES['down_block_types']),
                  up_block_types=list(SD_TYPES['up_block_types'])),
    'tiny': dict(layers_per_block=1, mid_block_type=None, block_out_channels=[320, 640, 1280],
                 params=0.33, down_block_types=['CrossAttnDownBlock2D'] * 3,
                 up_block_types=['CrossAttnUpBlock2D'] * 3),
}


@pytest.mark.parametrize('variant', VARIANTS)
def test_sd14_layout_matches_the_authors_configs(variant):
    """On SD 1.4's layout (meta tensors) the students are BK-SDM's published U-Nets."""
    from diffusers import UNet2DConditionModel
    with torch.device('meta'):
        sd14 = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8,
                                    sample_size=64)
        config = block_removed_config(sd14.config, variant)
        student = UNet2DConditionModel(**config)
    expected = dict(BK_SDM[variant])
    published = expected.pop('params')
    for key, value in expected.items():
        got = config[key]
        assert (list(got) if isinstance(got, (tuple, list)) else got) == value, key
    assert round(_params(sd14) / 1e9, 2) == 0.86
    # diffusers counts 0.579B / 0.482B / 0.323B: the card rounds Small and Tiny up.
    assert abs(_params(student) / 1e9 - published) < 0.01
    assert config['cross_attention_dim'] == 768 and config['attention_head_dim'] == 8


# ------------------------------------------------------------------ tiny teacher
@pytest.mark.parametrize('variant', VARIANTS)
def test_student_builds_and_runs(teacher, variant):
    student = block_removed_unet(teacher, variant).eval()
    assert type(student) is type(teacher)
    assert student.config.layers_per_block == 1
    assert all(len(b.resnets) == 1 for b in student.down_blocks)
    assert all(len(b.resnets) == 2 for b in student.up_blocks)
    assert (student.mid_block is None) == (variant != 'base')
    assert len(student.down_blocks) == (3 if variant == 'tiny' else 4)
    x, t, text = _inputs()
    with torch.no_grad():
        out = student(x, t, encoder_hidden_states=text, return_dict=False)[0]
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_parameter_counts_shrink_in_order(teacher):
    sizes = {v: _params(block_removed_unet(teacher, v)) for v in VARIANTS}
    assert _params(teacher) > sizes['base'] > sizes['small'] > sizes['tiny']
    # Small is Base less exactly the mid block.
    assert sizes['base'] - sizes['small'] == _params(teacher.mid_block)


@pytest.mark.parametrize('variant', VARIANTS)
def test_kept_blocks_are_the_teachers(teacher, variant):
    """Module by module (independent of the key mapping): the BK-SDM correspondence."""
    student = block_removed_unet(teacher, variant)
    compared = 0
    for name in ('conv_in', 'time_proj', 'time_embedding', 'conv_norm_out', 'conv_out'):
        compared += _same(getattr(student, name), getattr(teacher, name))
    for i, block in enumerate(student.down_blocks):
        src = teacher.down_blocks[i]
        compared += _same(block.resnets[0], src.resnets[0])  # first pair kept
        if hasattr(block, 'attentions'):
            compared += _same(block.attentions[0], src.attentions[0])
        if block.downsamplers is not None:
            compared += _same(block.downsamplers, src.downsamplers)
        else:  # the innermost stage (in tiny, the teacher's second-innermost one)
            assert i == len(student.down_blocks) - 1
            assert (src.downsamplers is not None) == (variant == 'tiny')
    if variant == 'base':
        compared += _same(student.mid_block, teacher.mid_block)
    offset = 1 if variant == 'tiny' else 0
    for i, block in enumerate(student.up_blocks):
        src = teacher.up_blocks[i + offset]
        for kept, from_teacher in ((0, 0), (1, 2)):  # the middle pair is removed
            compared += _same(block.resnets[kept], src.resnets[from_teacher])
            if hasattr(block, 'attentions'):
                compared += _same(block.attentions[kept], src.attentions[from_teacher])
        if block.upsamplers is not None:
            compared += _same(block.upsamplers, src.upsamplers)
    # Every student tensor was checked against its teacher tensor above.
    assert compared == len(student.state_dict())


def test_removed_middle_up_pair_is_not_copied(teacher):
    """Where the teacher's middle and last up resnets have equal shapes (innermost stage,
    16 -> 16 channels), the student's second resnet is the last one, not the middle."""
    student = block_removed_unet(teacher, 'base')
    mid, last = teacher.up_blocks[0].resnets[1], teacher.up_blocks[0].resnets[2]
    assert mid.conv1.weight.shape == last.conv1.weight.shape
    kept = student.up_blocks[0].resnets[1].conv1.weight
    assert torch.equal(kept, last.conv1.weight) and not torch.equal(kept, mid.conv1.weight)


def _neutralise_resnet(resnet: nn.Module) -> None:
    """Makes a diffusers ResnetBlock2D return its input (h when fed cat([h, skip]))."""
    nn.init.zeros_(resnet.conv2.weight)
    nn.init.zeros_(resnet.conv2.bias)
    if resnet.conv_shortcut is not None:
        out_ch = resnet.conv_shortcut.out_channels
        weight = torch.zeros_like(resnet.conv_shortcut.weight)
        weight[:, :out_ch, 0, 0] = torch.eye(out_ch)  # the up blocks concatenate h first
        resnet.conv_shortcut.weight.copy_(weight)
        nn.init.zeros_(resnet.conv_shortcut.bias)


def _neutralise_attention(attention: nn.Module) -> None:
    """Makes a Transformer2DModel return its input (zero output projection)."""
    nn.init.zeros_(attention.proj_out.weight)
    nn.init.zeros_(attention.proj_out.bias)


@pytest.mark.parametrize('variant', ['base', 'small'])
@torch.no_grad()
def test_student_computes_the_teacher_without_its_removed_blocks(teacher, variant):
    """Functional check of the whole correspondence, skip connections included.

    In a copy of the teacher, every removed block is made an identity: the second
    ResNet(+attention) pair of each down stage, the middle pair of each up stage (its
    shortcut passes h and drops its skip input) and, for Small, the mid block. Then the
    student, initialised from the unmodified teacher, computes exactly that network.
    """
    student = block_removed_unet(teacher, variant).eval()
    reference = copy.deepcopy(teacher).eval()
    for block in reference.down_blocks:
        _neutralise_resnet(block.resnets[1])
        if hasattr(block, 'attentions'):
            _neutralise_attention(block.attentions[1])
    for block in reference.up_blocks:
        _neutralise_resnet(block.resnets[1])
        if hasattr(block, 'attentions'):
            _neutralise_attention(block.attentions[1])
    if variant == 'small':
        for resnet in reference.mid_block.resnets:
            _neutralise_resnet(resnet)
        for attention in reference.mid_block.attentions:
            _neutralise_attention(attention)
    x, t, text = _inputs()
    expected = reference(x, t, encoder_hidden_states=text, return_dict=False)[0]
    got = student(x, t, encoder_hidden_states=text, return_dict=False)[0]
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    # ... and the unmodified teacher differs, so the check has teeth.
    dense = teacher(x, t, encoder_hidden_states=text, return_dict=False)[0]
    assert not torch.allclose(dense, expected, atol=1e-3)


def test_teacher_key_mapping():
    assert teacher_key('conv_in.weight', 'tiny') == 'conv_in.weight'
    assert teacher_key('down_blocks.2.resnets.0.conv1.weight', 'base') == \
        'down_blocks.2.resnets.0.conv1.weight'
    assert teacher_key('up_blocks.1.resnets.1.conv1.weight', 'small') == \
        'up_blocks.1.resnets.2.conv1.weight'
    assert teacher_key('up_blocks.1.attentions.0.proj_in.weight', 'base') == \
        'up_blocks.1.attentions.0.proj_in.weight'
    assert teacher_key('up_blocks.0.attentions.1.proj_out.bias', 'tiny') == \
        'up_blocks.1.attentions.2.proj_out.bias'
    assert teacher_key('up_blocks.2.upsamplers.0.conv.weight', 'tiny') == \
        'up_blocks.3.upsamplers.0.conv.weight'


# ------------------------------------------------------------------ errors
def test_unknown_variant_names_the_allowed_ones(teacher):
    with pytest.raises(ValueError, match=r"'huge'.*\['base', 'small', 'tiny'\]"):
        block_removed_unet(teacher, 'huge')


def test_teacher_layouts_it_cannot_handle():
    from diffusers import UNet2DConditionModel, UNet2DModel
    one_layer = UNet2DConditionModel(**dict(TINY_SD, layers_per_block=1))
    with pytest.raises(ValueError, match='layers_per_block=2'):
        block_removed_unet(one_layer, 'base')
    simple = UNet2DConditionModel(
        **dict(TINY_SD, block_out_channels=(8, 16),
               down_block_types=('SimpleCrossAttnDownBlock2D', 'DownBlock2D'),
               up_block_types=('UpBlock2D', 'SimpleCrossAttnUpBlock2D')))
    with pytest.raises(ValueError, match='SimpleCrossAttn'):
        block_removed_unet(simple, 'small')
    with pytest.raises(TypeError, match='UNet2DConditionModel'):
        block_removed_unet(UNet2DModel(block_out_channels=(8, 8), norm_num_groups=4,
                                       down_block_types=('DownBlock2D',) * 2,
                                       up_block_types=('UpBlock2D',) * 2), 'base')


def test_copy_refuses_a_student_of_another_variant(teacher):
    small = block_removed_unet(teacher, 'small')
    with pytest.raises(RuntimeError, match="not the BK-SDM 'tiny' variant"):
        copy_teacher_weights(small, teacher, 'tiny')


# ------------------------------------------------------------------ registry and distiller
def test_registered_builder_wraps_and_marks_initialised(teacher):
    from mmagic.registry import MODELS
    student = MODELS.build(dict(type='BKSDMStudent', variant='small'),
                           default_args=dict(teacher=teacher))
    net = unwrap_denoiser(student)
    assert net is not student and student._is_init  # mmagic's DiffusersWrapper
    assert 'model.conv_in.weight' in student.state_dict()
    _same(net, block_removed_unet(teacher, 'small'))
    with pytest.raises(ValueError, match='teacher=None'):
        MODELS.build(dict(type='BKSDMStudent', variant='base'))


def test_distiller_builds_the_student_from_its_teacher(teacher):
    from mmdiff_2ndm.models import DiffusionDistiller
    model = DiffusionDistiller(
        teacher=copy.deepcopy(teacher), student=dict(type='BKSDMStudent', variant='tiny'),
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=1000))
    net = unwrap_denoiser(model.student)
    assert len(net.down_blocks) == 3 and net.mid_block is None
    assert all(p.requires_grad for p in net.parameters())
    assert not any(p.requires_grad for p in model.teacher.parameters())
    _same(net, block_removed_unet(teacher, 'tiny'))
    model.init_weights()  # mmengine's Runner does this: the copied weights must survive
    _same(net, block_removed_unet(teacher, 'tiny'))
