"""DiffusionDistiller on tiny local models, one per family, driven by MMEngine's Runner."""
import copy
import glob
import math
import os.path as osp
import uuid

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.runner import Runner

import mmdiff_2ndm.evaluation  # noqa: F401  (registers TeacherFidelity)
import mmdiff_2ndm.models  # noqa: F401  (registers the distiller and 2ndMatchLoss)
from mmagic.registry import MODELS
from mmdiff_2ndm.models.denoisers import check_denoiser_inputs, unwrap_denoiser
from mmdiff_2ndm.models.distillers.batch_fields import images as batch_images

from helpers.distiller_assets import (IMG_SIZE, LATENT_IMG_SIZE, UNET_KWARGS,
                                      TinyGeneratedImageDataset)

ALL_LOSSES = dict(dsm=dict(loss_weight=1.0), kd=dict(loss_weight=1.0),
                  jacobian=dict(type='2ndMatchLoss', loss_weight=0.1, seed=0))


def _pixel_model(unet_folder: str, **overrides) -> dict:
    cfg = dict(type='DiffusionDistiller',
               teacher=dict(type='UNet2DModel', from_pretrained=unet_folder),
               noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
               num_inference_steps=2,
               losses=copy.deepcopy(ALL_LOSSES),
               jacobian_scale='sigma',
               ema=dict(momentum=0.5, start_iter=0),
               data_preprocessor=dict(type='DataPreprocessor'))
    cfg.update(overrides)
    return cfg


def _runner(work_dir: str, model: dict, iters: int, size: int, **extra) -> Runner:
    cfg = dict(
        default_scope='mmagic',
        model=model,
        work_dir=work_dir,
        train_dataloader=dict(
            batch_size=4, num_workers=0,
            dataset=dict(type='TinyGeneratedImageDataset', num_images=8, size=size),
            sampler=dict(type='InfiniteSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=iters, val_interval=iters),
        optim_wrapper=dict(constructor='MultiOptimWrapperConstructor',
                           student=dict(type='OptimWrapper',
                                        optimizer=dict(type='Adam', lr=1e-3))),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=iters, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False)),
        log_processor=dict(type='LogProcessor', by_epoch=False),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        randomness=dict(seed=0),
        log_level='WARNING',
        # Runners built in the same second would otherwise share one MessageHub
        # (named by timestamp) and see each other's logged losses.
        experiment_name=f'distiller_{uuid.uuid4().hex}')
    cfg.update(extra)
    return Runner(**cfg)


def _snapshot(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_and_check(runner: Runner, iters: int) -> dict:
    """Trains; checks losses, student updates, frozen teacher and the checkpoint."""
    model = runner.model
    teacher_before = _snapshot(model.teacher)
    student_before = _snapshot(model.student)
    runner.train()

    scalars = runner.message_hub.log_scalars
    for key in ('train/loss_dsm', 'train/loss_kd', 'train/loss_jacobian'):
        values = scalars[key].data[0]
        assert len(values) == iters and all(math.isfinite(v) for v in values), key

    teacher_after = model.teacher.state_dict()
    assert all(torch.equal(teacher_before[k], teacher_after[k]) for k in teacher_before)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    student_after = model.student.state_dict()
    changed = [k for k in student_before
               if not torch.equal(student_before[k], student_after[k])]
    assert len(changed) > len(student_before) // 2

    ckpt = torch.load(osp.join(runner.work_dir, f'iter_{iters}.pth'), map_location='cpu',
                      weights_only=False)
    keys = ckpt['state_dict'].keys()
    assert any(k.startswith('student.') for k in keys)
    assert any(k.startswith('student_ema.module.') for k in keys)
    # the optimizer exists for the student only, its state covers exactly its params
    assert set(ckpt['optimizer']) == {'student'}
    student_optim = ckpt['optimizer']['student']
    num_student = len(list(model.student.parameters()))
    assert len(student_optim['state']) == num_student
    assert sum(len(g['params']) for g in student_optim['param_groups']) == num_student
    return ckpt


def test_pixel_unet_train_validate_fid_fidelity_grid(tmp_path, unet2d_folder,
                                                     feature_net_path):
    iters = 2
    metrics = [
        dict(type='FID', prefix='FID', fake_nums=8, real_nums=8, sample_model='ema',
             inception_style='StyleGAN', inception_path=feature_net_path,
             inception_pkl=str(tmp_path / 'real_feats.pkl')),
        dict(type='TeacherFidelity', fake_nums=4, sample_model='ema'),
    ]
    runner = _runner(
        str(tmp_path), _pixel_model(unet2d_folder), iters, IMG_SIZE,
        val_dataloader=dict(
            batch_size=4, num_workers=0,
            dataset=dict(type='TinyGeneratedImageDataset', num_images=8, size=IMG_SIZE),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        val_cfg=dict(type='MultiValLoop'),
        val_evaluator=dict(type='Evaluator', metrics=metrics),
        custom_hooks=[dict(type='VisualizationHook', interval=iters, fixed_input=True,
                           vis_kwargs_list=dict(type='GAN', name='samples'), n_samples=4)],
        visualizer=dict(type='Visualizer', vis_backends=[dict(type='VisBackend')],
                        save_dir=str(tmp_path / 'vis')))
    _train_and_check(runner, iters)

    scalars = runner.message_hub.log_scalars
    fid = scalars['val/FID/fid'].current()
    assert math.isfinite(fid) and fid >= 0
    ssim = scalars['val/teacher_fidelity/ssim'].current()
    psnr = scalars['val/teacher_fidelity/psnr'].current()
    assert -1 <= ssim <= 1 and psnr > 0
    grids = glob.glob(str(tmp_path / 'vis' / '**' / 'samples*.png'), recursive=True)
    assert grids, 'no sample grid written'


class GreyStatsNet(torch.nn.Module):
    """Deterministic stand-in for FID's Inception: per image the mean, std, mean |dx| and
    mean |dy| of the grey level in [0, 1] (channel-symmetric: the channel order is
    test_configs' business; 4 features give a full-rank covariance from 8 images)."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        grey = x.float().mean(dim=1) / 255.0
        dx = (grey[:, :, 1:] - grey[:, :, :-1]).abs().mean(dim=(1, 2))
        dy = (grey[:, 1:, :] - grey[:, :-1, :]).abs().mean(dim=(1, 2))
        return torch.stack([grey.mean(dim=(1, 2)), grey.std(dim=(1, 2)), dx, dy], dim=1)


def _grey_stats(images: np.ndarray) -> np.ndarray:
    """GreyStatsNet by hand: (N, 3, H, W) uint8 -> (N, 4) float64."""
    grey = images.astype(np.float64).mean(axis=1) / 255.0
    dx = np.abs(np.diff(grey, axis=2)).mean(axis=(1, 2))
    dy = np.abs(np.diff(grey, axis=1)).mean(axis=(1, 2))
    return np.stack([grey.mean(axis=(1, 2)), grey.std(axis=(1, 2), ddof=1), dx, dy], axis=1)


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)), the root's trace from the
    eigenvalues of C_a C_b (real, >= 0 for covariance matrices)."""
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(cov_a @ cov_b).real, 0, None)).sum()
    return float(((a.mean(0) - b.mean(0))**2).sum() + np.trace(cov_a) + np.trace(cov_b)
                 - 2 * root_trace)


def test_fid_and_fidelity_equal_hand_computed_values(tmp_path, unet2d_folder, monkeypatch):
    """FID and TeacherFidelity through the Runner's validation equal values computed by
    hand: real statistics from the data set's images, samples re-drawn from the recorded
    noise with the EMA (and the teacher), features, Frechet distance and SSIM/PSNR by hand
    (scikit-image)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity
    feature_net = str(tmp_path / 'grey_stats.pt')
    torch.jit.script(GreyStatsNet().eval()).save(feature_net)
    metrics = [
        dict(type='FID', prefix='FID', fake_nums=8, real_nums=8, sample_model='ema',
             inception_style='StyleGAN', inception_path=feature_net,
             inception_pkl=str(tmp_path / 'real_feats.pkl')),
        dict(type='TeacherFidelity', fake_nums=4, sample_model='ema'),
    ]
    val_set = dict(type='TinyGeneratedImageDataset', num_images=8, size=IMG_SIZE)
    runner = _runner(
        str(tmp_path), _pixel_model(unet2d_folder), 2, IMG_SIZE,
        val_dataloader=dict(batch_size=4, num_workers=0, dataset=val_set,
                            sampler=dict(type='DefaultSampler', shuffle=False)),
        val_cfg=dict(type='MultiValLoop'), val_evaluator=dict(type='Evaluator', metrics=metrics),
        train_cfg=dict(by_epoch=False, max_iters=2, val_interval=100),
        optim_wrapper=dict(constructor='MultiOptimWrapperConstructor',
                           student=dict(type='OptimWrapper',
                                        optimizer=dict(type='Adam', lr=0.05))))
    # two large steps (the EMA's first update copies): teacher, student and EMA all differ
    runner.train()
    model = runner.model
    calls = []
    noise_fn, generate = model.noise_fn, model.generate

    def recording_generate(inputs, data_samples=None):
        with_teacher = bool((inputs.get('sample_kwargs') or {}).get('with_teacher'))
        calls.append(dict(with_teacher=with_teacher, sample_model=inputs.get('sample_model')))
        return generate(inputs, data_samples)

    def recording_noise_fn(noise=None, num_batches=1):
        calls[-1]['noise'] = noise_fn(noise, num_batches)
        return calls[-1]['noise']
    monkeypatch.setattr(model, 'generate', recording_generate)
    monkeypatch.setattr(model, 'noise_fn', recording_noise_fn)
    runner.val()
    scalars = runner.message_hub.log_scalars
    scores = {key: scalars[f'val/{key}'].current()
              for key in ('FID/fid', 'teacher_fidelity/ssim', 'teacher_fidelity/psnr')}

    def by_hand(net, noise):  # destruct by hand: [-1, 1] -> [0, 255]
        return (model.sample(net, noise, num_inference_steps=2) * 127.5 + 127.5).clamp(0, 255)
    ema = model.student_ema.module
    fid_calls = [c for c in calls if not c['with_teacher']]
    assert [c['sample_model'] for c in calls] == ['ema'] * len(calls)
    # FID scores the first fake_nums samples its sampler asked for
    fakes = torch.cat([by_hand(ema, c['noise']) for c in fid_calls])[:8].to(torch.uint8)
    assert fakes.shape[0] == 8
    student_fakes = by_hand(model.student, fid_calls[0]['noise']).to(torch.uint8)
    assert (student_fakes.float() - fakes[:4].float()).abs().mean() > 1  # EMA != student
    # real images through the preprocessor's [-1, 1] and back, as FID's prepare has them
    reals = TinyGeneratedImageDataset(num_images=8, size=IMG_SIZE).images.float()
    reals = ((reals - 127.5) / 127.5 * 127.5 + 127.5).clamp(0, 255).to(torch.uint8)
    expected_fid = _frechet(_grey_stats(fakes.numpy()), _grey_stats(reals.numpy()))
    assert scores['FID/fid'] == pytest.approx(expected_fid, rel=1e-4, abs=1e-7)

    # every batch its own noise (a fork of the same RNG state would repeat one batch)
    assert not any(torch.equal(calls[0]['noise'], c['noise']) for c in calls[1:])
    pair_calls = [c for c in calls if c['with_teacher']][:1]  # fake_nums=4: one batch
    students = by_hand(ema, pair_calls[0]['noise']).double().numpy()
    teachers = by_hand(model.teacher, pair_calls[0]['noise']).double().numpy()
    ssim = [structural_similarity(s, t, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=255)
            for s, t in zip(students, teachers)]
    psnr = [peak_signal_noise_ratio(t, s, data_range=255) for s, t in zip(students, teachers)]
    assert np.mean(ssim) < 1  # the student has moved away from its teacher
    assert scores['teacher_fidelity/ssim'] == pytest.approx(np.mean(ssim), rel=1e-5)
    assert scores['teacher_fidelity/psnr'] == pytest.approx(np.mean(psnr), rel=1e-5)


def test_dit_latent_class_conditional(tmp_path, dit_folders):
    iters = 2
    model = dict(type='DiffusionDistiller',
                 teacher=dict(type='DiTTransformer2DModel',
                              from_pretrained=dit_folders['dit']),
                 vae=dict(type='AutoencoderKL', from_pretrained=dit_folders['vae']),
                 noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
                 label_drop_prob=0.25, guidance_scale=2.0, num_inference_steps=2,
                 losses=copy.deepcopy(ALL_LOSSES),
                 ema=dict(momentum=0.5))
    runner = _runner(str(tmp_path), model, iters, LATENT_IMG_SIZE)
    assert runner.model.num_classes == 3
    _train_and_check(runner, iters)

    # class-conditional guided sampling from the EMA: the same noise and labels give the
    # same images, other labels other images (the labels reach the sampler)
    model = runner.model
    noise = model.noise_fn(num_batches=2)

    def sample(labels):
        out = model.val_step(dict(inputs=dict(noise=noise, sample_model='ema',
                                              sample_kwargs=dict(labels=labels))))
        assert len(out) == 2
        return torch.stack([o.fake_img for o in out])
    images = sample([0, 2])
    assert images.shape == (2, 3, LATENT_IMG_SIZE, LATENT_IMG_SIZE)
    assert torch.equal(sample([0, 2]), images)
    assert not torch.equal(sample([1, 1]), images)


def test_sd_text_conditional_v_prediction(tmp_path, sd_folders):
    iters = 2
    model = dict(type='DiffusionDistiller',
                 teacher=dict(type='UNet2DConditionModel', from_pretrained=sd_folders['unet']),
                 text_encoder=sd_folders['text_encoder'], tokenizer=sd_folders['tokenizer'],
                 noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100,
                                      prediction_type='v_prediction'),
                 label_drop_prob=0.1, sample_prompts=['a red cat'], num_inference_steps=2,
                 losses=copy.deepcopy(ALL_LOSSES), ema=dict(momentum=0.5))
    # trains on 8 px crops-worth of images (the UNet is convolutional), samples at its
    # configured 16 px
    runner = _runner(str(tmp_path), model, iters, 8)
    _train_and_check(runner, iters)
    out = runner.model.val_step(dict(inputs=dict(num_batches=2,
                                                 sample_kwargs=dict(with_teacher=True))))
    assert out[0].teacher_img.shape == out[0].fake_img.shape == (3, IMG_SIZE, IMG_SIZE)


def test_sd_v_prediction_target_and_text_conditioning(sd_folders, monkeypatch):
    """loss_dsm is the closed form ||eps_S(x_t, t, text) - v||^2 with
    v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (abar from the linear betas by hand), and
    the prompt changes what is sampled from the same noise."""
    model = MODELS.build(dict(
        type='DiffusionDistiller',
        teacher=dict(type='UNet2DConditionModel', from_pretrained=sd_folders['unet']),
        text_encoder=sd_folders['text_encoder'], tokenizer=sd_folders['tokenizer'],
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100,
                             prediction_type='v_prediction'),
        num_inference_steps=2, losses=dict(dsm=dict(loss_weight=1.0)),
        data_preprocessor=dict(type='DataPreprocessor')))
    batch = model.data_preprocessor(_batch(size=8), True)
    timesteps = torch.tensor([0, 30, 60, 99])
    monkeypatch.setattr(model.draws, 'timesteps', lambda batch, device: timesteps)
    torch.manual_seed(0)
    loss = model.compute_losses(batch['inputs'], batch['data_samples'])['loss_dsm']

    x_0 = batch_images(batch['inputs'])
    torch.manual_seed(0)
    noise = torch.randn_like(x_0)  # the first draw of compute_losses
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 100), 0)[timesteps]
    a, s = alpha_bar.sqrt().view(-1, 1, 1, 1), (1 - alpha_bar).sqrt().view(-1, 1, 1, 1)
    velocity = a * noise - s * x_0
    text = model.conditioner.encode_prompts(list(batch['data_samples'].prompt), 'cpu')
    with torch.no_grad():
        prediction = unwrap_denoiser(model.student)(a * x_0 + s * noise, timesteps,
                                                    encoder_hidden_states=text).sample
    expected = (prediction - velocity).pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)

    noise = torch.randn(2, 3, IMG_SIZE, IMG_SIZE)

    def sample(prompt):
        out = model.val_step(dict(inputs=dict(noise=noise, sample_model='orig',
                                              sample_kwargs=dict(prompt=prompt))))
        return torch.stack([o.fake_img for o in out])
    assert torch.equal(sample('a red cat'), sample('a red cat'))
    assert not torch.equal(sample('a red cat'), sample('a blue dog'))


def _batch(num: int = 4, size: int = IMG_SIZE) -> dict:
    dataset = TinyGeneratedImageDataset(num_images=num, size=size)
    items = [dataset[i] for i in range(num)]
    return dict(inputs=[it['inputs'] for it in items],
                data_samples=[it['data_samples'] for it in items])


def _student_wrapper(model, lr: float = 1e-3) -> OptimWrapperDict:
    return OptimWrapperDict(student=OptimWrapper(
        torch.optim.Adam(model.student.parameters(), lr=lr)))


def test_overfits_single_batch(unet2d_folder):
    torch.manual_seed(0)
    model = MODELS.build(_pixel_model(unet2d_folder, losses=dict(dsm=dict(loss_weight=1.0)),
                                      ema=None))
    batch = _batch(size=8)  # the UNet is fully convolutional: 8 px is 4x cheaper
    eval_t = torch.tensor([10, 30, 60, 90])

    def fixed_dsm() -> float:
        with torch.random.fork_rng():
            torch.manual_seed(123)
            with torch.no_grad():
                return model.pruning_loss(batch, eval_t).item()

    optim = _student_wrapper(model, lr=3e-3)
    before = fixed_dsm()
    for _ in range(30):
        model.train_step(batch, optim)
    after = fixed_dsm()
    # measured: 222 -> 133 after 30 steps (pixel-summed DSM, fixed noise and timesteps)
    assert after < 0.75 * before, (before, after)


def test_pruning_loss_grads_reach_student_only(unet2d_folder):
    model = MODELS.build(_pixel_model(unet2d_folder))
    loss = model.pruning_loss(_batch(), torch.tensor(50))
    assert loss.dim() == 0 and math.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None for p in model.student.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())


def test_teacher_never_reinitialised_and_eval(unet2d_folder):
    model = MODELS.build(_pixel_model(unet2d_folder))
    before = _snapshot(model.teacher)
    model.init_weights()
    model.train()
    assert not model.teacher.training and model.student.training
    after = model.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _expected_modes(model, mode: bool) -> dict:
    """What a full switch leaves: the teacher's modules in eval, every other in ``mode``."""
    frozen = {id(m) for m in model.teacher.modules()}
    return {name: (False if id(m) in frozen else mode) for name, m in model.named_modules()}


def _modes(model) -> dict:
    return {name: m.training for name, m in model.named_modules()}


def test_train_returns_at_once_only_when_nothing_changed(unet2d_folder, monkeypatch):
    """MMEngine calls train() every iteration: a call that would change nothing returns
    without walking the modules; a switched, replaced or added module gets the full switch."""
    model = MODELS.build(_pixel_model(unet2d_folder))
    assert model.train() is model and _modes(model) == _expected_modes(model, True)
    with monkeypatch.context() as patch:  # nothing changed: no module is switched again
        patch.setattr(torch.nn.Module, 'train', lambda *_: pytest.fail('switched again'))
        model.train()
    model.eval()
    assert _modes(model) == _expected_modes(model, False)
    model.train()
    assert _modes(model) == _expected_modes(model, True)
    # a submodule switched directly, the teacher switched on, a module replaced or added
    changes = [lambda: model.student.eval(), lambda: model.teacher.train(),
               lambda: setattr(model.student_ema, 'module',
                               copy.deepcopy(model.student_ema.module).eval()),
               lambda: model.losses.add_module('extra', torch.nn.Dropout().eval())]
    for change in changes:
        change()
        assert _modes(model) != _expected_modes(model, True)
        model.train()
        assert _modes(model) == _expected_modes(model, True)
    model.train(False)
    assert _modes(model) == _expected_modes(model, False)


def test_teacher_from_mmengine_checkpoint(tmp_path, unet2d_folder):
    from diffusers import UNet2DModel
    net = UNet2DModel.from_pretrained(unet2d_folder)
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save(dict(state_dict=net.state_dict()), ckpt)
    cfg = dict(type='UNet2DModel', from_config=unet2d_folder)
    model = MODELS.build(_pixel_model(unet2d_folder, teacher=cfg, teacher_ckpt=ckpt))
    loaded = unwrap_denoiser(model.teacher).state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in net.state_dict().items())


def test_error_loss_without_type_or_inputs(unet2d_folder):
    """Names outside dsm / kd / jacobian need a type; a loss must say what it consumes."""
    with pytest.raises(ValueError, match=r"losses.foo needs a `type`.*\['dsm', 'jacobian', "
                                         r"'kd'\] have a default type"):
        MODELS.build(_pixel_model(unet2d_folder, losses=dict(dsm=dict(), foo=dict())))
    with pytest.raises(ValueError, match=r"losses.l1 \(L1Loss\) does not say what it "
                                         r"consumes.*inputs=dict"):
        MODELS.build(_pixel_model(unet2d_folder, losses=dict(l1=dict(type='L1Loss'))))
    with pytest.raises(ValueError, match=r"losses.l1 consumes unknown input field\(s\) "
                                         r"\['teacher_output'\]"):
        MODELS.build(_pixel_model(unet2d_folder, losses=dict(l1=dict(
            type='L1Loss', inputs=dict(pred='student_out', target='teacher_output')))))
    with pytest.raises(ValueError, match=r"Losses \['jacobian', 'jac2'\] each run the "
                                         r'forwards'):
        MODELS.build(_pixel_model(unet2d_folder, losses=dict(
            jacobian=dict(type='2ndMatchLoss'), jac2=dict(type='2ndMatchLoss'))))
    with pytest.raises(KeyError, match="'NoSuchLoss' is not a registered loss"):
        MODELS.build(_pixel_model(unet2d_folder, losses=dict(x=dict(type='NoSuchLoss'))))


def test_error_missing_teacher_weights(tmp_path, unet2d_folder):
    cfg = dict(type='UNet2DModel', from_config=unet2d_folder)
    with pytest.raises(FileNotFoundError, match='teacher_ckpt .*does not exist'):
        MODELS.build(_pixel_model(unet2d_folder, teacher=cfg,
                                  teacher_ckpt=str(tmp_path / 'missing.pth')))
    with pytest.raises(ValueError, match='teacher has no weights'):
        MODELS.build(_pixel_model(unet2d_folder, teacher=cfg))


def test_error_denoiser_config_needs_inputs_never_passed(unet2d_folder):
    """Configs whose forward wants more than (x_t, t, one condition) fail when built."""
    float_class = dict(type='UNet2DModel', **UNET_KWARGS, class_embed_type='identity')
    with pytest.raises(ValueError, match=r"class_embed_type='identity'.*num_class_embeds=N"):
        MODELS.build(_pixel_model(unet2d_folder, student=float_class))
    text = dict(sample_size=IMG_SIZE, in_channels=3, out_channels=3,
                block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                cross_attention_dim=8, attention_head_dim=4,
                down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'))
    text_and_class = dict(type='UNet2DConditionModel', **text, num_class_embeds=10)
    with pytest.raises(ValueError, match=r'num_class_embeds=10, class_embed_type=None\) '
                                         'needs class labels'):
        MODELS.build(_pixel_model(unet2d_folder, student=text_and_class))
    sdxl_like = dict(type='UNet2DConditionModel', **text, addition_embed_type='text_time',
                     addition_time_embed_dim=8, projection_class_embeddings_input_dim=56)
    with pytest.raises(ValueError, match="addition_embed_type='text_time'.*SDXL"):
        MODELS.build(_pixel_model(unet2d_folder, teacher=sdxl_like,
                                  teacher_ckpt=dict(state_dict={})))
    # integer class labels through nn.Embedding are what the distiller passes
    labelled = dict(type='UNet2DModel', **UNET_KWARGS, num_class_embeds=10)
    MODELS.build(_pixel_model(unet2d_folder, student=labelled))
    # an addition embedding of the text states themselves needs nothing more
    text_added = dict(text, addition_embed_type='text', encoder_hid_dim=8)
    check_denoiser_inputs(UNet2DConditionModel(**text_added))


def test_error_output_shape_mismatch(unet2d_folder):
    student = dict(type='UNet2DModel', **dict(UNET_KWARGS, out_channels=1))
    model = MODELS.build(_pixel_model(unet2d_folder, student=student))
    with pytest.raises(ValueError, match=rf'shape \(4, 1, {IMG_SIZE}, {IMG_SIZE}\)'):
        model.train_step(_batch(), _student_wrapper(model))


def test_error_optimizer_with_teacher_params(unet2d_folder):
    model = MODELS.build(_pixel_model(unet2d_folder))
    optim = OptimWrapper(torch.optim.Adam(model.parameters(), lr=1e-3))
    with pytest.raises(ValueError, match="not the student's"):
        model.train_step(_batch(), optim)


def test_sample_prompts_cycle_across_calls(sd_folders, monkeypatch):
    """A prompt list longer than a batch is sampled through, not restarted every batch."""
    from mmagic.registry import MODELS
    model = MODELS.build(dict(
        type='DiffusionDistiller',
        teacher=dict(type='UNet2DConditionModel', from_pretrained=sd_folders['unet']),
        text_encoder=sd_folders['text_encoder'], tokenizer=sd_folders['tokenizer'],
        noise_scheduler=dict(type='DDPMScheduler', num_train_timesteps=100),
        sample_prompts=['p0', 'p1', 'p2', 'p3', 'p4'], losses=dict(dsm=dict(loss_weight=1.0))))
    seen = []
    monkeypatch.setattr(model.conditioner, 'encode_prompts',
                        lambda prompts, device: seen.append(prompts))
    for _ in range(3):
        model.conditioner.sampling_condition(None, {}, 2, 'cpu')
    conditional = seen[0::2]  # each call also encodes the empty (null) prompts
    assert conditional == [['p0', 'p1'], ['p2', 'p3'], ['p4', 'p0']]

    # Two ranks take interleaved blocks: together they cover the list like one process.
    import mmdiff_2ndm.models.distillers.conditioner as conditioner_module
    per_rank = {}
    for rank in (0, 1):
        seen.clear()
        model.conditioner.next_prompt = 0
        monkeypatch.setattr(conditioner_module, 'get_dist_info', lambda rank=rank: (rank, 2))
        for _ in range(2):
            model.conditioner.sampling_condition(None, {}, 2, 'cpu')
        per_rank[rank] = seen[0::2]
    assert per_rank[0] == [['p0', 'p1'], ['p4', 'p0']]
    assert per_rank[1] == [['p2', 'p3'], ['p1', 'p2']]


def test_images_packed_in_data_samples_are_used(unet2d_folder):
    """MMagic's PackInputs() with default keys leaves the image in data_samples.gt_img."""
    model = MODELS.build(_pixel_model(unet2d_folder))
    batch = _batch()
    as_inputs = model.data_preprocessor(batch, True)
    in_samples = model.data_preprocessor(
        dict(inputs=[{} for _ in batch['inputs']], data_samples=batch['data_samples']), True)
    expected = batch_images(as_inputs['inputs'])
    images = batch_images(in_samples['inputs'], in_samples['data_samples'])
    assert images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(images, expected)
    with pytest.raises(KeyError, match=r"PackInputs\(\)"):
        batch_images({}, None)
