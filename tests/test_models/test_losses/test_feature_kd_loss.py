"""FeatureKDLoss: closed forms, feature points (BK-SDM, DiT maps), kept channels of a
width-pruned student, connectors."""
import copy

import pytest
import torch
from torch import nn

import mmdiff_2ndm.models  # noqa: F401  (registers the losses)
from mmdiff_2ndm.models.denoisers import run_denoiser
from mmdiff_2ndm.models.feature_recorder import FeatureRecorder
from mmdiff_2ndm.models.losses import FeatureKDLoss, feature_points, kept_output_channels
from mmdiff_2ndm.pruning import prune_denoiser

from helpers.denoisers import TINY_SD, dit, tiny_unet


class _Pair(nn.Module):
    """Two named layers, enough for the loss's layer-name spec."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1)
        self.b = nn.Linear(3, 3)


def _bound(**kwargs) -> FeatureKDLoss:
    loss = FeatureKDLoss(**kwargs)
    loss.bind(_Pair(), _Pair())
    return loss


def test_closed_forms_of_reductions_mask_and_schedule():
    gen = torch.Generator().manual_seed(0)
    s = dict(a=torch.randn(2, 2, 4, 4, generator=gen), b=torch.randn(2, 5, 3, generator=gen))
    t = dict(a=torch.randn(2, 2, 4, 4, generator=gen), b=torch.randn(2, 5, 3, generator=gen))
    mean = sum((s[k] - t[k]).pow(2).mean() for k in 'ab')
    total = sum((s[k] - t[k]).pow(2).flatten(1).sum(1).mean() for k in 'ab')
    torch.testing.assert_close(_bound(layers=['a', 'b'])(s, t), mean)
    torch.testing.assert_close(_bound(layers=['a', 'b'], reduction='sum',
                                      loss_weight=0.5)(s, t), 0.5 * total)
    # student layer a <- teacher layer b is a dict spec
    assert _bound(layers=dict(a='b')).points == [('a', 'b')]

    # linear decay to 0 at schedule_iters
    decaying = _bound(layers=['a'], weight_schedule='linear', schedule_iters=10)
    single = (s['a'] - t['a']).pow(2).mean()
    for it, factor in [(0, 1.0), (5, 0.5), (10, 0.0), (20, 0.0)]:
        torch.testing.assert_close(decaying(s, t, iteration=it), factor * single)

    # TinyFusion's mask: elements beyond k sigma of the sample's mean (teacher or student)
    spiky_t = {k: v.clone() for k, v in t.items()}
    spiky_t['a'][0, 0, 0, 0] = 100.0
    masked = _bound(layers=['a'], mask_sigma=2.0)(s, spiky_t)
    keep = torch.ones_like(s['a'])
    for src in (spiky_t['a'], s['a']):
        flat = src.flatten(1)
        std = flat.std(1, keepdim=True, unbiased=False)
        far = (flat - flat.mean(1, keepdim=True)).abs() > 2.0 * std
        keep[far.view_as(keep)] = 0
    assert keep[0, 0, 0, 0] == 0 and keep.sum() < keep.numel()
    expected = ((s['a'] - spiky_t['a']).pow(2) * keep).sum() / keep.sum()
    torch.testing.assert_close(masked, expected)
    assert masked < _bound(layers=['a'])(s, spiky_t)


@pytest.mark.parametrize('kwargs, match', [
    (dict(reduction='max'), 'reduction'),
    (dict(weight_schedule='linear'), 'schedule_iters'),
    (dict(weight_schedule='cosine'), 'weight_schedule'),
    (dict(mask_sigma=0), 'mask_sigma'),
    (dict(connector='mlp'), 'connector'),
    (dict(loss_weight=-1), 'loss_weight'),
    (dict(layers='unet3d'), 'layers must be one of'),
])
def test_bad_options_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        loss = FeatureKDLoss(**kwargs)
        loss.bind(tiny_unet(), tiny_unet())


def test_unknown_layer_names_the_net():
    with pytest.raises(ValueError, match=r"The teacher \(_Pair\) has no module\(s\) \['c'\]"):
        FeatureKDLoss(layers=dict(a='c')).bind(_Pair(), _Pair())


def test_bk_sdm_points_of_sd_unet_and_its_students():
    from diffusers import UNet2DConditionModel
    from mmdiff_2ndm.models.block_removal import block_removed_unet
    torch.manual_seed(0)
    teacher = UNet2DConditionModel(**dict(TINY_SD, sample_size=8))
    points = feature_points(teacher, teacher, 'bk-sdm')
    assert points == [(f'down_blocks.{i}', f'down_blocks.{i}') for i in range(4)] + \
        [(f'up_blocks.{i}', f'up_blocks.{i}') for i in range(4)]
    assert feature_points(teacher, teacher, 'auto') == points
    base = block_removed_unet(teacher, 'base')
    assert feature_points(base, teacher, 'bk-sdm') == points
    tiny = block_removed_unet(teacher, 'tiny')
    # BK-SDM-Tiny: 6 points, its up blocks are the teacher's outer three; its last down
    # block no longer downsamples: the teacher's state before the downsampler
    assert feature_points(tiny, teacher, 'bk-sdm') == \
        [(f'down_blocks.{i}', f'down_blocks.{i}') for i in range(2)] + \
        [('down_blocks.2', 'down_blocks.2.attentions.1')] + \
        [(f'up_blocks.{i}', f'up_blocks.{i + 1}') for i in range(3)]
    # The remapped points have equal shapes on real features: the loss runs as is.
    loss = FeatureKDLoss(layers='bk-sdm')
    loss.bind(tiny, teacher)
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([3, 500])
    text = torch.randn(2, 5, 8, generator=gen)
    feats = []
    for net, names in zip((tiny, teacher), loss.feature_layers()):
        with torch.no_grad(), FeatureRecorder(net, names) as rec:
            run_denoiser(net, x, t, text)
        feats.append(rec.features(2))
    assert torch.isfinite(loss(*feats)) and loss(*feats) > 0


def test_dit_block_maps():
    teacher, student = dit(4, 2, 8), dit(2, 2, 8)
    assert feature_points(student, teacher, 'dit', '2i+1') == \
        [('transformer_blocks.0', 'transformer_blocks.1'),
         ('transformer_blocks.1', 'transformer_blocks.3')]
    assert feature_points(student, teacher, 'auto', [0, 2])[1][1] == 'transformer_blocks.2'
    record = dict(depth=dict(module='transformer_blocks', kept=[1, 2], num_blocks=4))
    assert feature_points(student, teacher, 'dit', 'auto', record) == \
        [('transformer_blocks.0', 'transformer_blocks.1'),
         ('transformer_blocks.1', 'transformer_blocks.2')]
    assert feature_points(teacher, teacher, 'dit') == \
        [(f'transformer_blocks.{i}',) * 2 for i in range(4)]
    with pytest.raises(ValueError, match="no depth-pruning record.*block_map='2i\\+1'"):
        feature_points(student, teacher, 'dit')
    with pytest.raises(ValueError, match='one teacher block in \\[0, 4\\)'):
        feature_points(student, teacher, 'dit', [0, 4])
    with pytest.raises(ValueError, match="block_map='kept' needs a depth-pruned student"):
        feature_points(student, teacher, 'dit', 'kept')


@pytest.fixture(scope='module')
def pruned_unet():
    """A tiny U-Net teacher and its student, pruned by half (magnitude), untrained."""
    teacher = tiny_unet()
    with torch.no_grad():  # distinct biases: an equal slice identifies the channels
        for module in teacher.modules():
            if getattr(module, 'bias', None) is not None:
                module.bias.copy_(torch.randn_like(module.bias))
    student, record = prune_denoiser(copy.deepcopy(teacher), 0.5, 'magnitude')
    return teacher, student, record


def _features(loss, student, teacher, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, t = torch.randn(2, 3, 8, 8, generator=gen), torch.tensor([10, 900])
    out = []
    for net, names in zip((student, teacher), loss.feature_layers()):
        with torch.no_grad(), FeatureRecorder(net, names) as rec:
            run_denoiser(net, x, t)
        out.append(rec.features(2))
    return out


def test_recorder_detach_cuts_the_graph(pruned_unet):
    """``detach=True`` (the frozen teacher) records the same values without a graph; the
    default keeps the student's graph, so the feature loss trains the student."""
    _, student, _ = pruned_unet
    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 3, 8, 8, generator=gen), torch.tensor([10, 900])
    feats = {}
    for detach in (False, True):
        with FeatureRecorder(student, ['down_blocks.0'], detach=detach) as rec:
            run_denoiser(student, x, t)
        feats[detach] = rec.features(2)['down_blocks.0']
    assert feats[False].grad_fn is not None and feats[True].grad_fn is None
    assert not feats[True].requires_grad
    torch.testing.assert_close(feats[True], feats[False].detach(), rtol=0, atol=0)


def test_kept_channels_are_the_pruned_slice(pruned_unet):
    """The teacher channels found for each point are those the student's layers were
    sliced from (hand-indexed biases), and the loss compares exactly those."""
    teacher, student, record = pruned_unet
    loss = FeatureKDLoss(layers='bk-sdm')
    loss.bind(student, teacher, record)
    s_feats, t_feats = _features(loss, student, teacher)
    widths = {s: (s_feats[s].shape[1], t_feats[t].shape[1]) for s, t in loss.points}
    assert all(n_s < n_t for n_s, n_t in widths.values())
    kept = kept_output_channels(teacher, record, loss.points, widths)
    writers = {'down_blocks.0': 'downsamplers.0.conv', 'down_blocks.1': 'resnets.0.conv2',
               'up_blocks.0': 'upsamplers.0.conv', 'up_blocks.1': 'resnets.1.conv2'}
    for point, writer in writers.items():
        index = kept[point]
        assert index.numel() == widths[point][0] and not torch.equal(
            index, torch.arange(index.numel()))  # not simply the first channels
        torch.testing.assert_close(student.get_submodule(f'{point}.{writer}').bias,
                                   teacher.get_submodule(f'{point}.{writer}').bias[index],
                                   rtol=0, atol=0)
    expected = sum((s_feats[s] - t_feats[t][:, kept[s]]).pow(2).mean()
                   for s, t in loss.points)
    torch.testing.assert_close(loss(s_feats, t_feats), expected)


def test_width_mismatch_without_record_or_connector_says_how(pruned_unet):
    teacher, student, _ = pruned_unet
    loss = FeatureKDLoss(layers='bk-sdm')
    loss.bind(student, teacher)
    with pytest.raises(ValueError, match="no pruning record.*connector='conv1x1'"):
        loss(*_features(loss, student, teacher))


def test_connector_maps_other_widths_and_trains(pruned_unet):
    teacher, _, _ = pruned_unet
    student = tiny_unet(block_out_channels=(16, 32), norm_num_groups=4)
    loss = FeatureKDLoss(layers='bk-sdm', connector='conv1x1')
    loss.bind(student, teacher)
    assert sorted(loss.connectors) == ['down_blocks_0', 'down_blocks_1', 'up_blocks_0',
                                       'up_blocks_1']
    assert loss.connectors['down_blocks_0'].weight.shape == (32, 16, 1, 1)
    s_feats, t_feats = _features(loss, student, teacher)
    value = loss(s_feats, t_feats)
    value.backward()
    assert loss.connectors['up_blocks_1'].weight.grad.abs().sum() > 0
    expected = sum((loss.connectors[s.replace('.', '_')](s_feats[s]) - t_feats[t]).pow(2).mean()
                   for s, t in loss.points)
    torch.testing.assert_close(value, expected)
    # a re-bind keeps a connector that fits, refuses one that no longer does
    kept = loss.connectors['down_blocks_0']
    loss.bind(student, teacher)
    assert loss.connectors['down_blocks_0'] is kept
    with pytest.raises(ValueError, match='connector of .*maps 16 channels but the student '
                                         'now has 8'):
        loss.bind(tiny_unet(block_out_channels=(8, 16), norm_num_groups=4), teacher)


def test_block_map_picks_the_teacher_blocks():
    """The loss binds the points its block_map names (the default 'auto' would need a
    depth-pruning record here)."""
    loss = FeatureKDLoss(layers='dit', block_map='2i+1')
    loss.bind(dit(2, 2, 8), dit(4, 2, 8))
    assert loss.feature_layers() == (['transformer_blocks.0', 'transformer_blocks.1'],
                                     ['transformer_blocks.1', 'transformer_blocks.3'])
