"""prune_denoiser and rebuild_pruned under torch.no_grad() and torch.inference_mode(): the
usual contexts for loading a model for inference (torch-pruning traces through autograd)."""
import copy

import pytest
import torch
from diffusers import DiTTransformer2DModel, UNet2DModel

from mmdiff_2ndm.models.denoisers import example_denoiser_inputs, run_denoiser
from mmdiff_2ndm.pruning import parameter_shapes, prune_denoiser, rebuild_pruned

pytestmark = pytest.mark.usefixtures('single_thread')
CONTEXTS = {'no_grad': torch.no_grad, 'inference_mode': torch.inference_mode}


def _unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(16, 32), norm_num_groups=4,
                       down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
                       up_block_types=('AttnUpBlock2D', 'UpBlock2D'), attention_head_dim=8)


def _dit() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=8, num_layers=1, sample_size=4, patch_size=2,
                                 num_embeds_ada_norm=3)


def _dsm_loss(net):
    """A scalar loss of ``net`` for the gradient criteria (fixed inputs, any t)."""
    inputs = example_denoiser_inputs(net, batch_size=2)

    def loss_fn(t):
        return run_denoiser(net, inputs['x_t'], t.expand(2), inputs['condition']).pow(2).mean()
    return loss_fn


@pytest.mark.parametrize('context', sorted(CONTEXTS))
@pytest.mark.parametrize('make, importance', [(_unet, 'magnitude'), (_unet, 'diff-pruning'),
                                              (_dit, 'magnitude')])
def test_prune_and_rebuild_inside_inference_contexts(context, make, importance):
    # the reference: pruned with autograd on
    reference = make()
    reference, ref_record = prune_denoiser(
        reference, 0.5, importance, with_macs=False, timesteps=[0, 500],
        loss_fn=None if importance == 'magnitude' else _dsm_loss(reference))
    net = make()
    dense = copy.deepcopy(net)
    loss_fn = None if importance == 'magnitude' else _dsm_loss(net)
    with CONTEXTS[context]():
        pruned, record = prune_denoiser(net, 0.5, importance, loss_fn=loss_fn, with_macs=False,
                                        timesteps=[0, 500])
        rebuilt = rebuild_pruned(dense, record)
    assert record['history'] == ref_record['history']
    assert parameter_shapes(pruned) == parameter_shapes(reference) != parameter_shapes(make())
    assert parameter_shapes(rebuilt) == record['shapes']
    # the context is restored and the pruned nets run inside it
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    inputs = example_denoiser_inputs(pruned, batch_size=2)
    with CONTEXTS[context]():
        out = run_denoiser(pruned, **inputs)
        assert not torch.is_grad_enabled()
        rebuilt.load_state_dict(pruned.state_dict())
        assert torch.equal(run_denoiser(rebuilt, **inputs), out)
    assert all(p.grad is None for p in pruned.parameters())


def test_gradient_pass_shows_a_progress_bar(capsys):
    from mmdiff_2ndm.pruning.importance import accumulate_gradients
    net = _unet()
    used = accumulate_gradients(net, _dsm_loss(net), [0, 10, 20])
    assert used == [0, 10, 20]
    assert 'pruning gradients' in capsys.readouterr().err
    accumulate_gradients(net, _dsm_loss(net), [0], progress=False)
    assert capsys.readouterr().err == ''


@pytest.mark.parametrize('make', [_unet, _dit])
def test_prune_and_rebuild_frozen_model(make):
    """A frozen model (a teacher, ``requires_grad_(False)``) prunes as a trainable one and
    keeps its flags: without grad-requiring parameters the trace is empty and nothing
    would be pruned."""
    reference, ref_record = prune_denoiser(make(), 0.5, 'magnitude', with_macs=False)
    net = make().requires_grad_(False)
    first_layer = net.conv_in if hasattr(net, 'conv_in') else net.pos_embed.proj
    first_layer.requires_grad_(True)  # a mix: the flags must come back as they were
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    pruned, record = prune_denoiser(net, 0.5, 'magnitude', with_macs=False)
    assert record['history'] == ref_record['history']
    assert parameter_shapes(pruned) == parameter_shapes(reference) != parameter_shapes(make())
    assert {n for n, p in pruned.named_parameters() if p.requires_grad} == trainable
    rebuilt = rebuild_pruned(make().requires_grad_(False), record)
    assert parameter_shapes(rebuilt) == record['shapes']
    assert not any(p.requires_grad for p in rebuilt.parameters())
