"""Depth pruning of DiT (whole blocks, keep N of M): the selectors choose what they should,
records rebuild the same model, bad input fails with a message that names the fix."""
import copy
import io

import pytest
import torch
from diffusers import DiTTransformer2DModel

from mmdiff_2ndm.models.denoisers import example_denoiser_inputs, run_denoiser
from mmdiff_2ndm.pruning import (DEPTH_SELECTORS, apply_depth, block_map, check_record,
                                 check_state_dict_shapes, kept_blocks, parameter_shapes,
                                 prune_model, rebuild_pruned, select_blocks)


def tiny_dit(num_layers: int = 6, seed: int = 0) -> DiTTransformer2DModel:
    """A DiT with ``num_layers`` blocks of width 16 on 8x8x4 inputs, 10 classes; in eval
    mode (in train mode DiT drops class labels at random)."""
    torch.manual_seed(seed)
    return DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                                 out_channels=4, num_layers=num_layers, sample_size=8,
                                 patch_size=2, num_embeds_ada_norm=10).eval()


def make_identity(block) -> None:
    """adaLN-Zero: zero modulation makes both residual gates 0, so the block returns its
    input exactly."""
    with torch.no_grad():
        block.norm1.linear.weight.zero_()
        block.norm1.linear.bias.zero_()


def calibration(net, batches: int = 2):
    return [example_denoiser_inputs(net, batch_size=4, seed=seed) for seed in range(batches)]


def _roundtrip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize('selector', ['output', 'cosine'])
def test_one_shot_selectors_drop_the_identity_block_first(selector):
    net = tiny_dit(6)
    make_identity(net.transformer_blocks[3])
    inputs = example_denoiser_inputs(net, batch_size=2)
    with torch.no_grad():
        dense_out = run_denoiser(net, **inputs)
    depth, info = select_blocks(net, keep=5, group_size=6, selector=selector,
                                calibration=calibration(net), progress=False)
    assert depth == dict(module='transformer_blocks', kept=[0, 1, 2, 4, 5], num_blocks=6)
    assert info['scores'][3] == pytest.approx(0.0, abs=1e-12)
    assert min(s for i, s in enumerate(info['scores']) if i != 3) > 1e-4
    # ... and dropping it changes nothing.
    apply_depth(net, depth)
    with torch.no_grad():
        torch.testing.assert_close(run_denoiser(net, **inputs), dense_out)
    # Keep 2 of 3 per group: each group drops its own least important block.
    other = tiny_dit(6)
    make_identity(other.transformer_blocks[1])
    make_identity(other.transformer_blocks[5])
    depth, _ = select_blocks(other, keep=2, group_size=3, selector=selector,
                             calibration=calibration(other), progress=False)
    assert depth['kept'] == [0, 2, 3, 4]


def test_output_selector_captures_calibration_inputs_from_the_loss():
    net = tiny_dit(4)
    make_identity(net.transformer_blocks[2])
    data = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4)

    def loss_fn(t):
        noise = torch.randn_like(data)  # drawn from the (seeded, restored) global RNG
        return ((run_denoiser(net, data + noise, t.repeat(4), labels) - noise) ** 2).mean()

    state = torch.random.get_rng_state()
    depth, _ = select_blocks(net, keep=3, group_size=4, loss_fn=loss_fn, timesteps=[10, 500],
                             progress=False)
    assert depth['kept'] == [0, 1, 3]
    assert torch.equal(torch.random.get_rng_state(), state)


def test_learnable_search_picks_the_clearly_best_pattern():
    net = tiny_dit(4)
    target_net = copy.deepcopy(net)
    apply_depth(target_net, dict(module='transformer_blocks', kept=[0, 2], num_blocks=4))
    inputs = example_denoiser_inputs(net, batch_size=8, seed=1)
    with torch.no_grad():
        target = run_denoiser(target_net, **inputs)
    weights = {k: v.clone() for k, v in net.state_dict().items()}

    def loss_fn(t):  # only the pattern (0, 2) of the 6 ways to keep 2 of 4 reaches 0
        return ((run_denoiser(net, **inputs) - target) ** 2).mean()

    depth, info = select_blocks(net, keep=2, group_size=4, selector='learnable',
                                loss_fn=loss_fn, steps=60, progress=False)
    assert depth['kept'] == [0, 2]
    best = info['patterns'].index([0, 2])
    assert max(info['probabilities'][0]) == info['probabilities'][0][best] > 0.5
    # The search trained the weights jointly, then put the teacher's back.
    assert all(torch.equal(net.state_dict()[k], v) for k, v in weights.items())
    assert all(p.grad is None for p in net.parameters())


def test_depth_and_width_records_rebuild_the_same_model():
    net = tiny_dit(4)
    record = prune_model(net, 'depth+width', width=dict(ratio=0.5),
                         depth=dict(keep=1, group_size=2, calibration=calibration(net)),
                         progress=False)
    assert len(net.transformer_blocks) == 2
    assert net.transformer_blocks[0].attn1.to_q.out_features == 8  # width after depth
    assert record['settings']['method'] == 'depth+width'
    assert record['stats']['params_after'] < 0.5 * record['stats']['params_before']
    kept = kept_blocks(record)
    assert len(kept) == 2 and kept == record['depth']['kept']
    assert block_map(record) == kept and block_map(record, 'uniform') == [1, 3]
    assert kept_blocks(dict(record, depth=None)) is None

    saved = _roundtrip(dict(state_dict=net.state_dict(), meta=dict(pruning=record)))
    dense = tiny_dit(4)
    rebuild_pruned(dense, saved['meta']['pruning'])
    assert parameter_shapes(dense) == parameter_shapes(net)
    dense.load_state_dict(saved['state_dict'], strict=True)
    rebuild_pruned(dense, record)  # twice is harmless
    inputs = example_denoiser_inputs(net, batch_size=2)
    with torch.no_grad():
        torch.testing.assert_close(run_denoiser(dense, **inputs), run_denoiser(net, **inputs))


def test_depth_only_student_keeps_the_teachers_blocks():
    teacher = tiny_dit(4)
    student = copy.deepcopy(teacher)
    record = prune_model(student, 'depth', depth=dict(keep=2, group_size=4, selector='cosine',
                                                      calibration=calibration(student)),
                         progress=False)
    assert record['history'] == [] and len(student.transformer_blocks) == 2
    for i, j in enumerate(record['depth']['kept']):
        for (name, p), q in zip(student.transformer_blocks[i].named_parameters(),
                                teacher.transformer_blocks[j].parameters()):
            assert torch.equal(p, q), name
    assert _roundtrip(record) == record


def test_depth_errors():
    net = tiny_dit(4)
    cal = calibration(net, 1)
    with pytest.raises(ValueError, match='keep=3 blocks per group must lie in'):
        select_blocks(net, keep=3, group_size=2, calibration=cal)
    with pytest.raises(ValueError, match='group_size=3 must divide the 4 blocks'):
        select_blocks(net, keep=1, group_size=3, calibration=cal)
    with pytest.raises(ValueError, match='Unknown depth selector'):
        select_blocks(net, keep=1, group_size=2, selector='l1', calibration=cal)
    with pytest.raises(ValueError, match='needs calibration data'):
        select_blocks(net, keep=1, group_size=2)
    with pytest.raises(ValueError, match='trains on loss_fn'):
        select_blocks(net, keep=1, group_size=2, selector='learnable')
    with pytest.raises(ValueError, match='needs depth=dict'):
        prune_model(net, 'depth')
    with pytest.raises(ValueError, match="use method='depth\\+width'"):
        prune_model(net, 'depth', width=dict(ratio=0.2), depth=dict(keep=1, group_size=2))
    from diffusers import UNet2DModel
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=('DownBlock2D',) * 2, up_block_types=('UpBlock2D',) * 2)
    with pytest.raises(ValueError, match='transformer blocks of a DiT'):
        select_blocks(unet, keep=1, group_size=2, calibration=cal)

    record = prune_model(net, 'depth', depth=dict(keep=1, group_size=2, calibration=cal),
                         progress=False)
    for kept in ([0, 4], [1, 0], [1, 1], []):
        bad = dict(record, depth=dict(record['depth'], kept=kept))
        with pytest.raises(ValueError, match='must be ascending, distinct block indices'):
            check_record(bad)
        with pytest.raises(ValueError, match='ascending'):
            rebuild_pruned(tiny_dit(4), bad)
    with pytest.raises(ValueError, match='keeps 2 of 4 transformer_blocks; the model has 6'):
        rebuild_pruned(tiny_dit(6), record)
    # A depth-pruned checkpoint fits the dense model shape for shape on the blocks both
    # have: the block count must still refuse it.
    with pytest.raises(ValueError, match='depth-pruned checkpoint loaded into a dense model'):
        check_state_dict_shapes(tiny_dit(4), net.state_dict())
    with pytest.raises(ValueError, match='more blocks than the'):
        check_state_dict_shapes(net, tiny_dit(4).state_dict())


def test_selectors_table_has_the_three():
    assert {'output', 'cosine', 'learnable'} <= set(DEPTH_SELECTORS)
    assert DEPTH_SELECTORS['learnable'].needs_loss and not DEPTH_SELECTORS['output'].needs_loss
