"""prune_model, the one entry point: a distiller or a bare denoiser, computed or replayed;
the criteria table."""
import pytest
import torch
import torch_pruning as tp
from diffusers import DiTTransformer2DModel
from mmengine.model import BaseModel

from mmagic.models.base_models import ExponentialMovingAverage
from mmdiff_2ndm.models.denoisers import example_denoiser_inputs, run_denoiser
from mmdiff_2ndm.pruning import (IMPORTANCE_CRITERIA, parameter_shapes, prune_denoiser,
                                 prune_model, register_importance)

DIT = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
           num_layers=4, sample_size=8, patch_size=2, num_embeds_ada_norm=10)


class RecordingDistiller(BaseModel):
    """Teacher, student copy and EMA; remembers the record it was handed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = DiTTransformer2DModel(**DIT)
        self.student = DiTTransformer2DModel(**DIT)
        self.student.load_state_dict(self.teacher.state_dict())
        self.student_ema = ExponentialMovingAverage(self.student, momentum=0.1)
        self.records = []
        self.eval()  # in train mode DiT drops class labels at random

    def set_pruning_record(self, record):
        self.records.append(record)

    def forward(self, *args, **kwargs):
        raise NotImplementedError('only pruned here')


def test_prune_model_on_a_distiller_then_replay_on_another():
    model = RecordingDistiller()
    calibration = [example_denoiser_inputs(model.student, batch_size=2)]
    record = prune_model(model, 'depth+width', width=dict(ratio=0.5),
                         depth=dict(keep=1, group_size=2, calibration=calibration),
                         progress=False)
    assert len(model.student.transformer_blocks) == 2
    assert len(model.teacher.transformer_blocks) == 4  # the teacher stays dense
    assert parameter_shapes(model.student_ema.module) == parameter_shapes(model.student)
    assert model.records == [record]

    other = RecordingDistiller()
    assert prune_model(other, record=record) is record
    assert other.records == [record]
    other.load_state_dict(model.state_dict(), strict=True)
    inputs = example_denoiser_inputs(model.student, batch_size=2)
    with torch.no_grad():
        torch.testing.assert_close(run_denoiser(other.student_ema.module, **inputs),
                                   run_denoiser(model.student_ema.module, **inputs))
    with pytest.raises(TypeError, match='distiller with a'):
        prune_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="method='nope'"):
        prune_model(RecordingDistiller(), 'nope')


def test_a_new_importance_is_one_table_entry():
    calls = []

    class Ones(tp.importance.MagnitudeImportance):
        def __call__(self, group, **kwargs):
            calls.append(len(group))
            return super().__call__(group, **kwargs)

    register_importance('test-ones', Ones)
    try:
        net = DiTTransformer2DModel(**DIT)
        _, record = prune_denoiser(net, 0.5, 'test-ones', with_macs=False)
        assert calls and record['settings']['importance'] == 'test-ones'
        with pytest.raises(ValueError, match='already registered'):
            register_importance('test-ones', Ones)
    finally:
        del IMPORTANCE_CRITERIA['test-ones']
    with pytest.raises(ValueError, match='register_importance'):
        prune_denoiser(DiTTransformer2DModel(**DIT), 0.5, 'test-ones')
