"""Class conditioning through a label table (CompVis LDM-4): DiffusionDistiller's
``class_embedder`` and VQ first stage, on the tiny converted LDM of ``compvis_ldm``."""
import math

import pytest
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict

import mmdiff_2ndm.models  # noqa: F401  (registers the distiller, ClassEmbedder)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.compvis_ldm import load_compvis_ldm, save_compvis_ldm
from mmdiff_2ndm.models.denoisers import unwrap_denoiser
from mmdiff_2ndm.models.distillers.batch_fields import images as batch_images

from helpers.distiller_assets import NUM_CLASSES, TinyGeneratedImageDataset

LDM_IMG = 12  # the tiny VQ halves it to the U-Net's 6x6 latents


@pytest.fixture(scope='module')
def ldm(compvis_ldm, tmp_path_factory) -> dict:
    """Converted tiny LDM: modules and the class table saved as a checkpoint."""
    parts = load_compvis_ldm(compvis_ldm['ckpt'], compvis_ldm['config'])
    assert parts['class_embedder'].num_embeddings == NUM_CLASSES + 1
    saved = save_compvis_ldm(parts, str(tmp_path_factory.mktemp('ldm')))
    return dict(parts, table_path=saved['class_embedder'])


def _model_cfg(ldm, **overrides) -> dict:
    cfg = dict(type='DiffusionDistiller', teacher=ldm['unet'], vae=ldm['vqvae'],
               class_embedder=dict(type='ClassEmbedder', num_embeddings=NUM_CLASSES + 1,
                                   embed_dim=8, checkpoint=ldm['table_path']),
               noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
               num_inference_steps=2, label_drop_prob=0.5,
               losses=dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                           jacobian=dict(type='2ndMatchLoss', loss_weight=0.1)),
               jacobian_scale='sigma', data_preprocessor=dict(type='DataPreprocessor'))
    cfg.update(overrides)
    return cfg


def _batch(num: int = 4) -> dict:
    dataset = TinyGeneratedImageDataset(num_images=num, size=LDM_IMG)
    items = [dataset[i] for i in range(num)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def test_labels_become_cross_attention_context(ldm):
    model = MODELS.build(_model_cfg(ldm))
    table = ldm['class_embedder'].embedding.weight
    assert model.num_classes == NUM_CLASSES  # the last row is the null label
    data = model.data_preprocessor(_batch(), True)
    labels = torch.tensor([i % NUM_CLASSES for i in range(4)])

    condition_of = model.conditioner.training_condition
    kept = condition_of(data['data_samples'], 4, 'cpu', drop_u=torch.ones(4))
    torch.testing.assert_close(kept, table[labels][:, None])
    dropped = condition_of(data['data_samples'], 4, 'cpu', drop_u=torch.zeros(4))
    torch.testing.assert_close(dropped, table[NUM_CLASSES].expand(4, 1, 8))

    condition, uncondition, _ = model.conditioner.sampling_condition(
        None, dict(labels=[2, 0]), 2, 'cpu')
    torch.testing.assert_close(condition, table[[2, 0]][:, None])
    torch.testing.assert_close(uncondition, table[[NUM_CLASSES] * 2][:, None])

    # VQ first stage: the pre-quantisation latents (scale 1), as LDM trains on.
    images = batch_images(data['inputs'])
    expected = ldm['vqvae'].encode(images).latents
    torch.testing.assert_close(model.codec.encode(images), expected)
    assert expected.shape == (4, 3, LDM_IMG // 2, LDM_IMG // 2)


def test_trains_and_samples_with_guidance(ldm):
    torch.manual_seed(0)
    model = MODELS.build(_model_cfg(ldm, guidance_scale=1.5))
    table_before = model.class_embedder.embedding.weight.clone()
    teacher_before = {k: v.clone() for k, v in unwrap_denoiser(model.teacher).state_dict().items()}
    student_before = {k: v.clone() for k, v in unwrap_denoiser(model.student).state_dict().items()}
    optim = OptimWrapperDict(student=OptimWrapper(
        torch.optim.Adam(model.student.parameters(), lr=1e-3)))
    for _ in range(2):
        logs = model.train_step(_batch(), optim)
    assert {'loss_dsm', 'loss_kd', 'loss_jacobian'} <= set(logs)
    assert all(math.isfinite(float(v.detach())) for v in logs.values())
    assert torch.equal(model.class_embedder.embedding.weight, table_before)  # frozen
    assert not model.class_embedder.embedding.weight.requires_grad
    teacher_after = unwrap_denoiser(model.teacher).state_dict()
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
    student_after = unwrap_denoiser(model.student).state_dict()
    assert any(not torch.equal(student_before[k], student_after[k]) for k in student_before)

    samples = model.generate(dict(num_batches=2, sample_kwargs=dict(labels=[0, 2])))
    assert len(samples) == 2 and samples[0].fake_img.shape == (3, LDM_IMG, LDM_IMG)
    assert all(torch.isfinite(s.fake_img).all() for s in samples)


def test_bad_class_embedder_settings_are_named(ldm, unet2d_folder):
    no_weights = dict(type='ClassEmbedder', num_embeddings=NUM_CLASSES + 1, embed_dim=8)
    with pytest.raises(ValueError, match='class_embedder has no weights'):
        MODELS.build(_model_cfg(ldm, class_embedder=no_weights))
    with pytest.raises(ValueError, match=r'num_classes=5 does not fit'):
        MODELS.build(_model_cfg(ldm, num_classes=5))
    pixel_teacher = dict(type='UNet2DModel', from_pretrained=unet2d_folder)
    with pytest.raises(ValueError, match='needs a UNet2DConditionModel'):
        MODELS.build(_model_cfg(ldm, teacher=pixel_teacher, vae=None))
