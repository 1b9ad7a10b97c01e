"""prune_denoiser / rebuild_pruned on UNet2DModel, DiT and the SD UNet."""
import functools
import io

import pytest
import torch

from mmdiff_2ndm.models.denoisers import example_denoiser_inputs, run_denoiser
from helpers.denoisers import sd_unet, tiny_unet
from mmdiff_2ndm.pruning import (check_state_dict_shapes, count_params_macs,
                                 prune_denoiser, rebuild_pruned, search_ratio)
from mmdiff_2ndm.pruning.rules import check_group_norms


def _roundtrip(obj):
    """torch.save then the safe loader: proves the object is plain data."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _assert_rebuild_exact(pruned, dense, record):
    """Rebuilding `dense` from the (saved) record + weights reproduces `pruned`."""
    ckpt = _roundtrip(dict(state_dict=pruned.state_dict(), meta=dict(pruning=record)))
    rebuild_pruned(dense, ckpt['meta']['pruning'])
    dense.load_state_dict(ckpt['state_dict'], strict=True)
    inputs = example_denoiser_inputs(pruned, batch_size=2)
    with torch.no_grad():
        torch.testing.assert_close(run_denoiser(dense.eval(), **inputs),
                                   run_denoiser(pruned.eval(), **inputs))


def test_cifar10_ddpm_reaches_diff_pruning_size(make_cifar10_ddpm):
    model, record = prune_denoiser(make_cifar10_ddpm(), ratio=0.3, groupnorm_ratio=0.25)
    stats = record['stats']
    # The published dense and pruned sizes (Diff-Pruning, torch-pruning 1.3.1).
    assert stats['params_before'] == 35_746_307
    assert stats['macs_before'] == pytest.approx(6.064e9, rel=1e-3)
    assert stats['params_after'] == pytest.approx(19.8e6, rel=0.05)
    assert stats['macs_after'] == pytest.approx(3.4e9, rel=0.05)
    inputs = example_denoiser_inputs(model, batch_size=2)
    with torch.no_grad():
        assert run_denoiser(model, **inputs).shape == (2, 3, 32, 32)
    _assert_rebuild_exact(model, make_cifar10_ddpm(), record)


@pytest.mark.parametrize('importance', ['magnitude', 'taylor', 'diff-pruning', 'random'])
def test_importances_prune_and_rebuild(make_unet, importance):
    model = make_unet()
    data = torch.randn(4, 3, 8, 8)
    noise = torch.randn(4, 3, 8, 8)

    def loss_fn(t):
        alpha = 1.0 - t.float() / 1000
        x_t = alpha.sqrt() * data + (1 - alpha).sqrt() * noise
        return ((run_denoiser(model, x_t, t.repeat(4)) - noise) ** 2).mean()

    model, record = prune_denoiser(model, ratio=0.5, importance=importance, loss_fn=loss_fn,
                                   timesteps=range(0, 1000, 400))
    assert record['stats']['params_after'] < 0.5 * record['stats']['params_before']
    assert all(p.grad is None for p in model.parameters())
    if importance == 'taylor':  # replay does not depend on the criterion: check one
        _assert_rebuild_exact(model, make_unet(), record)


def test_importances_keep_different_channels(make_unet):
    """Each criterion decides: none may silently fall back to another.

    The loss drops below diff-pruning's threshold at t=400, and t=800 (another batch,
    weighted 100x) dominates the Taylor sum, so diff-pruning (t=0, 400) and taylor
    (t=0, 400, 800) rank channels on different gradients; magnitude needs none.
    """
    data = torch.randn(3, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    scale = {0: 1.0, 400: 0.01, 800: 100.0}

    def pruned_channels(importance: str) -> list:
        model = make_unet()

        def loss_fn(t):
            x_t, target = data[int(t) // 400], data[(int(t) // 400 + 1) % 3]
            return scale[int(t)] * ((run_denoiser(model, x_t, t.repeat(4)) - target)**2).mean()

        _, record = prune_denoiser(model, ratio=0.5, importance=importance, loss_fn=loss_fn,
                                   timesteps=[0, 400, 800], with_macs=False)
        if importance == 'diff-pruning':
            assert record['settings']['timesteps_used'] == [0, 400]
        return record['history']

    kept = {name: pruned_channels(name) for name in ('magnitude', 'taylor', 'diff-pruning')}
    assert kept['taylor'] != kept['magnitude']
    assert kept['diff-pruning'] != kept['magnitude']
    assert kept['diff-pruning'] != kept['taylor']
    # the same criterion on the same net and gradients decides the same
    assert pruned_channels('taylor') == kept['taylor']


def test_diff_pruning_stops_at_loss_threshold(make_unet):
    model = make_unet()
    losses = {0: 10.0, 100: 5.0, 200: 0.4, 300: 0.1}
    inputs = example_denoiser_inputs(model)

    def loss_fn(t):
        # Reaches every parameter (so each has a gradient) with a chosen value per t.
        return losses[int(t)] + 0 * run_denoiser(model, **inputs).sum()

    _, record = prune_denoiser(model, ratio=0.3, importance='diff-pruning', loss_fn=loss_fn,
                               timesteps=[0, 100, 200, 300], diff_pruning_thr=0.05,
                               with_macs=False)
    # 0.4 < 0.05 * 10 stops the accumulation after t=200.
    assert record['settings']['timesteps_used'] == [0, 100, 200]


def test_gradient_importance_needs_loss(make_unet):
    with pytest.raises(ValueError, match='loss_fn'):
        prune_denoiser(make_unet(), importance='taylor')
    with pytest.raises(ValueError, match='importance'):
        prune_denoiser(make_unet(), importance='l1')
    with pytest.raises(ValueError, match='ratio'):
        prune_denoiser(make_unet(), ratio=1.0)


def test_random_importance_is_seeded(make_unet):
    _, first = prune_denoiser(make_unet(), 0.4, 'random', seed=3, with_macs=False)
    _, second = prune_denoiser(make_unet(), 0.4, 'random', seed=3, with_macs=False)
    _, other = prune_denoiser(make_unet(), 0.4, 'random', seed=4, with_macs=False)
    assert first['history'] == second['history']
    assert first['history'] != other['history']


def test_ignored_layers_and_round_to(make_unet):
    model, _ = prune_denoiser(make_unet(norm_num_groups=1), 0.3, ignored_layers=['conv_in'],
                              round_to=8, with_macs=False)
    assert model.conv_in.out_channels == 32
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 or w == 3 for w in widths)
    with pytest.raises(ValueError, match='not a module'):
        prune_denoiser(make_unet(), ignored_layers=['no_such_layer'])


def test_target_params_is_searched(make_unet):
    # One GroupNorm group per layer: fine-grained widths, so the target is reachable.
    dense = count_params_macs(make_unet(norm_num_groups=1), with_macs=False)['params']
    ratio, groupnorm_ratio = search_ratio(make_unet(norm_num_groups=1),
                                          dict(params=0.5 * dense), steps=6)
    assert ratio == groupnorm_ratio and 0.2 < ratio < 0.5
    _, record = prune_denoiser(make_unet(norm_num_groups=1), ratio, with_macs=False)
    assert record['stats']['params_after'] == pytest.approx(0.5 * dense, rel=0.1)
    with pytest.raises(ValueError, match='target'):
        search_ratio(make_unet(), dict(flops=1))


@pytest.mark.parametrize('prune_num_heads', [False, True])
def test_dit_s2_heads_or_head_dims(make_dit, prune_num_heads):
    # S/2 widths; full depth (12) once, 4 layers for the whole-head variant (suite time).
    num_layers = 4 if prune_num_heads else 12
    model, record = prune_denoiser(make_dit(num_layers, 6, 64), ratio=0.5,
                                   prune_num_heads=prune_num_heads, with_macs=False)
    attn = model.transformer_blocks[0].attn1
    assert attn.to_q.out_features == 192
    if prune_num_heads:
        assert attn.heads == 3 and set(record['heads'].values()) == {3}
    else:
        assert attn.heads == 6  # 6 heads of 32 dims
    # Residual stream, patch embedding, adaLN and final layer keep their widths.
    assert model.pos_embed.proj.out_channels == 384
    assert model.transformer_blocks[0].norm1.linear.out_features == 6 * 384
    assert model.proj_out_2.out_features == 2 * 2 * 8
    inputs = example_denoiser_inputs(model, batch_size=2)
    with torch.no_grad():
        assert run_denoiser(model, **inputs).shape == (2, 4, 32, 32)
    if not prune_num_heads:  # one exact rebuild of DiT is enough for the suite's time
        _assert_rebuild_exact(model, make_dit(12, 6, 64), record)


def test_dit_xl2_widths(make_dit):
    # XL/2 widths (16 heads x 72) at 2 of its 28 layers, to keep the suite fast.
    model, record = prune_denoiser(make_dit(2, 16, 72), ratio=0.25, with_macs=False)
    assert model.transformer_blocks[1].attn1.to_k.out_features == 16 * 54
    assert model.transformer_blocks[1].ff.net[0].proj.out_features == 3456
    inputs = example_denoiser_inputs(model)
    with torch.no_grad():
        assert run_denoiser(model, **inputs).shape == (1, 4, 32, 32)
    assert record['stats']['params_after'] < record['stats']['params_before']


def test_sd_unet_keeps_text_width(make_sd_unet):
    model, record = prune_denoiser(make_sd_unet(), ratio=0.3, with_macs=False)
    cross = model.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    assert cross.to_k.in_features == 768 and cross.to_v.in_features == 768
    assert cross.to_q.out_features < 320 and cross.heads == 8
    inputs = example_denoiser_inputs(model, batch_size=2, seq_len=7)
    with torch.no_grad():
        assert run_denoiser(model, **inputs).shape == (2, 4, 8, 8)
    _assert_rebuild_exact(model, make_sd_unet(), record)


def test_record_mismatch_errors(make_unet, make_dit):
    pruned, record = prune_denoiser(make_unet(), 0.5, with_macs=False)
    with pytest.raises(ValueError, match="'unet2d' denoiser"):
        rebuild_pruned(make_dit(1, 2, 8), record)
    with pytest.raises(ValueError, match='pruned checkpoint loaded into a dense model'):
        check_state_dict_shapes(make_unet(), pruned.state_dict())
    with pytest.raises(ValueError, match='dense checkpoint loaded into a pruned model'):
        check_state_dict_shapes(pruned, make_unet().state_dict())
    other = make_unet(block_out_channels=(32, 96))
    with pytest.raises(ValueError):
        rebuild_pruned(other, record)


def _denoising_unet(**kwargs):
    from mmagic.models import DenoisingUnet
    torch.manual_seed(0)
    cfg = dict(image_size=16, in_channels=3, base_channels=32, resblocks_per_downsample=1,
               channels_cfg=[1, 2], attention_res=[8], num_heads=2,
               norm_cfg=dict(type='GN', num_groups=8), use_scale_shift_norm=False)
    cfg.update(kwargs)
    return DenoisingUnet(**cfg)


def test_mmagic_denoising_unet_within_its_limits():
    model, record = prune_denoiser(_denoising_unet(), ratio=0.5, with_macs=False)
    assert record['family'] == 'mmagic_unet'
    assert record['stats']['params_after'] < record['stats']['params_before']
    # Attention is never pruned: its fused qkv keeps 3x the residual width it reads.
    for module in model.modules():
        if hasattr(module, 'qkv'):
            assert module.qkv.out_channels == 3 * module.qkv.in_channels
    inputs = example_denoiser_inputs(model, batch_size=2)
    with torch.no_grad():  # learned variance: 6 output channels, the eps half returned
        assert run_denoiser(model, **inputs).shape == (2, 3, 16, 16)
    _assert_rebuild_exact(model, _denoising_unet(), record)
    with pytest.raises(ValueError, match=r'resblock_updown=True\) is not supported'):
        prune_denoiser(_denoising_unet(resblock_updown=True), with_macs=False)


def test_mmagic_denoising_unet_scale_shift_norm():
    """ADM's scale-shift resblocks: the chunked embedding projection keeps whole norm
    groups, as for diffusers' (below)."""
    model, record = prune_denoiser(_denoising_unet(use_scale_shift_norm=True), ratio=0.5,
                                   with_macs=False)
    assert record['stats']['params_after'] < record['stats']['params_before']
    for module in model.modules():
        if isinstance(module, torch.nn.GroupNorm):
            assert module.weight.shape[0] % module.num_groups == 0
    _assert_rebuild_exact(model, _denoising_unet(use_scale_shift_norm=True), record)


# the SD layout narrowed for per-test pruning (32 / 64 channels, 16-d text)
NARROW_SD = dict(block_out_channels=(32, 64), norm_num_groups=8, cross_attention_dim=16)


@pytest.mark.parametrize('make', [tiny_unet, functools.partial(sd_unet, **NARROW_SD)],
                         ids=['unet2d', 'unet2d_condition'])
def test_scale_shift_resnets_keep_whole_norm_groups_in_both_chunks(make):
    def build():
        return make(resnet_time_scale_shift='scale_shift', norm_num_groups=4)

    dense = build()
    model, record = prune_denoiser(build(), ratio=0.3, groupnorm_ratio=0.5, with_macs=False)
    resnets = [m for m in model.modules() if type(m).__name__ == 'ResnetBlock2D']
    dense_resnets = [m for m in dense.modules() if type(m).__name__ == 'ResnetBlock2D']
    assert resnets and all(r.time_embedding_norm == 'scale_shift' for r in resnets)
    for resnet, twin in zip(resnets, dense_resnets):
        groups, width = twin.norm2.num_groups, twin.norm2.num_channels
        per_group = width // groups
        # the kept channels, told apart by their (random, distinct) conv biases: every
        # norm group keeps int(n / G * (1 - r)) of its own n / G channels (a right total
        # alone can hide channels moved between groups) ...
        kept = [twin.conv1.bias.tolist().index(b) for b in resnet.conv1.bias.tolist()]
        assert kept == sorted(kept)
        assert [sum(i // per_group == g for i in kept) for g in range(groups)] == \
            [int(per_group * 0.5)] * groups
        # ... are the kept rows of the scale chunk and of the shift chunk
        rows = kept + [width + i for i in kept]
        torch.testing.assert_close(resnet.time_emb_proj.bias, twin.time_emb_proj.bias[rows],
                                   rtol=0, atol=0)
    _assert_rebuild_exact(model, build(), record)


def test_layouts_pruning_cannot_map_are_refused():
    skip = tiny_unet(down_block_types=('SkipDownBlock2D', 'AttnSkipDownBlock2D'),
                     up_block_types=('AttnSkipUpBlock2D', 'SkipUpBlock2D'))
    with pytest.raises(ValueError, match='SkipDownBlock2D.*not supported'):
        prune_denoiser(skip, with_macs=False)
    added_kv = sd_unet(**NARROW_SD,
                       down_block_types=('SimpleCrossAttnDownBlock2D', 'ResnetDownsampleBlock2D'),
                       up_block_types=('ResnetUpsampleBlock2D', 'SimpleCrossAttnUpBlock2D'),
                       mid_block_type='UNetMidBlock2DSimpleCrossAttn')
    with pytest.raises(ValueError, match='added-KV attention'):
        prune_denoiser(added_kv, with_macs=False)


def test_group_norm_check_names_the_broken_norm():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.GroupNorm(4, 8))
    check_group_norms(net)
    net[1].weight = torch.nn.Parameter(torch.ones(6))  # as a wrong channel mapping leaves it
    with pytest.raises(ValueError, match="GroupNorm '1' with 6 channels.*4 groups"):
        check_group_norms(net)
