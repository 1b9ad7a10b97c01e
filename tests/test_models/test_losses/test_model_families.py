"""2ndMatchLoss on tiny models of every supported denoiser family."""
import copy

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mmdiff_2ndm.models.denoisers import example_denoiser_inputs, run_denoiser
from mmdiff_2ndm.models.losses import SecondOrderMatchLoss, jacobian_vector_product


def tiny_unet2d() -> nn.Module:
    from diffusers import UNet2DModel
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
        down_block_types=('DownBlock2D', 'AttnDownBlock2D'),
        up_block_types=('AttnUpBlock2D', 'UpBlock2D'))


def tiny_unet2d_condition() -> nn.Module:
    from diffusers import UNet2DConditionModel
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
        attention_head_dim=4,
        down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
        up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'))


def tiny_dit() -> nn.Module:
    from diffusers import DiTTransformer2DModel
    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, num_layers=1,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10)


def tiny_mmagic_unet() -> nn.Module:
    from mmagic.models.editors.ddpm.denoising_unet import DenoisingUnet
    return DenoisingUnet(
        image_size=16, in_channels=3, base_channels=16, resblocks_per_downsample=1,
        channels_cfg=[1, 2], attention_res=[8], num_heads=2,
        norm_cfg=dict(type='GN', num_groups=8),
        output_cfg=dict(mean='eps', var='FIXED_LARGE'))


FAMILIES = {
    'unet2d': tiny_unet2d,
    'unet2d_condition': tiny_unet2d_condition,
    'dit': tiny_dit,
    'mmagic_unet': tiny_mmagic_unet,
}


def _student_teacher(family: str):
    torch.manual_seed(0)
    teacher = FAMILIES[family]().eval()
    student = copy.deepcopy(teacher).train()
    with torch.no_grad():  # a perturbed copy stands in for a pruned, finetuned student
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return student, teacher


def _closure(net, timesteps, condition):

    def fn(x, batch_index=None):
        if batch_index is None:
            return run_denoiser(net, x, timesteps, condition)
        return run_denoiser(net, x, timesteps[batch_index],
                            None if condition is None else condition[batch_index])

    return fn


def _reached_by_output(net, inputs) -> set:
    """Names of parameters that receive a gradient from a plain forward."""
    net.zero_grad()
    run_denoiser(net, **inputs).pow(2).sum().backward()
    names = {n for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    return names


@pytest.mark.parametrize('mode', ['jvp', 'vjp'])
@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_family_gradients_reach_student_only(family, mode):
    student, teacher = _student_teacher(family)
    inputs = example_denoiser_inputs(teacher, batch_size=2, seq_len=3)
    expected = _reached_by_output(student, inputs)
    t, c, x = inputs['timesteps'], inputs['condition'], inputs['x_t']
    loss_fn = SecondOrderMatchLoss(mode=mode, seed=0, loss_weight=1.0)
    out = loss_fn(_closure(student, t, c), _closure(teacher, t, c), x,
                  scale=torch.tensor([0.5, 1.0]), return_outputs=True)
    assert torch.isfinite(out.loss) and out.loss.item() > 0
    with torch.no_grad():
        torch.testing.assert_close(out.teacher_out, run_denoiser(teacher, **inputs))
    # The Jacobian term alone already reaches the parameters that shape J ...
    jac_grads = torch.autograd.grad(
        out.loss, [p for p in student.parameters()], allow_unused=True, retain_graph=True)
    assert sum(g is not None for g in jac_grads) >= 0.9 * len(expected)
    # ... and with KD on the reused output every output-affecting parameter is reached.
    (out.loss + (out.student_out - out.teacher_out).pow(2).sum()).backward()
    reached = {n for n, p in student.named_parameters() if p.grad is not None}
    assert reached == expected
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize('family', ['unet2d', 'unet2d_condition', 'dit'])
def test_family_bf16_autocast(family):
    student, teacher = _student_teacher(family)
    inputs = example_denoiser_inputs(teacher, batch_size=2)
    t, c, x = inputs['timesteps'], inputs['condition'], inputs['x_t']
    loss_fn = SecondOrderMatchLoss(seed=0, loss_weight=1.0)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss_fn(_closure(student, t, c), _closure(teacher, t, c), x,
                      return_outputs=True)
    assert out.student_out.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad():  # bf16 estimate agrees with float32 to bf16 accuracy
        reference = loss_fn.__class__(seed=0, loss_weight=1.0)(
            _closure(student, t, c), _closure(teacher, t, c), x)
    assert out.loss.item() == pytest.approx(reference.item(), rel=0.2)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_family_jvp_matches_torch_func(family):
    # The forward-AD kernel mode (exp-normalise attention, tangent-only conv/linear,
    # closed-form group-norm tangent) against torch.func.jvp with stock rules: same
    # J v and the same gradient of ||J v||^2 w.r.t. every parameter, in float64
    # (mmagic's UNet builds float32 time embeddings, so it stays float32).
    dtype, tol = ((torch.float32, 1e-5) if family == 'mmagic_unet' else
                  (torch.float64, 1e-10))
    student, _ = _student_teacher(family)
    student = student.to(dtype).eval()
    inputs = example_denoiser_inputs(student, batch_size=2, seq_len=3)
    t, c = inputs['timesteps'], inputs['condition']
    c = c.to(dtype) if c is not None and c.is_floating_point() else c
    x = inputs['x_t'].to(dtype)
    v = torch.randn_like(x)
    fn = _closure(student, t, c)
    params = [p for p in student.parameters()]
    with sdpa_kernel([SDPBackend.MATH]):
        out_ref, jv_ref = torch.func.jvp(fn, (x, ), (v, ))
        grads_ref = torch.autograd.grad(jv_ref.pow(2).sum(), params, allow_unused=True)
    out, jv = jacobian_vector_product(fn, x, v, 'student')
    grads = torch.autograd.grad(jv.pow(2).sum(), params, allow_unused=True)
    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(jv, jv_ref, atol=tol * jv_ref.abs().max().item(), rtol=tol)
    scale = max(g.abs().max().item() for g in grads_ref if g is not None)
    for name, g, g_ref in zip([n for n, _ in student.named_parameters()], grads, grads_ref):
        if g_ref is None:
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, g_ref, atol=tol * scale, rtol=1e3 * tol, msg=name)
