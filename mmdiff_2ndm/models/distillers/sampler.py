"""The distiller's sampler: which net, which noise, which condition (the loop and the
latent codec it runs are in ``models/sampling.py``)."""
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from diffusers import SchedulerMixin
from mmengine.model import BaseAveragedModel
from torch import Tensor, nn

from mmagic.models.utils import get_valid_num_batches
from mmagic.structures import DataSample

from ..denoisers import example_denoiser_inputs
from ..sampling import SAMPLE_MODELS, LatentCodec, denoise
from .batch_fields import Device
from .conditioner import Conditioner
from .validation import check_choice


class SamplingNets(NamedTuple):
    """The distiller's denoisers at the time of a sampling call (pruning replaces the
    student, and with it the EMA)."""
    student: nn.Module
    ema: Optional[nn.Module]
    teacher: Optional[nn.Module]

    @property
    def reference(self) -> nn.Module:
        """The teacher, or the student without one: the net whose input shape is read."""
        return self.teacher if self.teacher is not None else self.student


class DistillerSampler:
    """Generates images for :class:`DiffusionDistiller`: resolves the net to sample,
    draws the initial noise, conditions it (:class:`Conditioner`), runs :func:`denoise`
    with the test scheduler and decodes (:class:`LatentCodec`).

    It holds no parameters: the distiller owns every network and passes them per call,
    so that its checkpoint keys do not depend on this object.

    Args:
        test_scheduler (SchedulerMixin): The sampling scheduler.
        codec (LatentCodec): Latents <-> images.
        conditioner (Conditioner): Labels / prompts -> condition and null condition.
        num_inference_steps (int): Default sampling steps.
        guidance_scale (float): Default classifier-free guidance scale (1: none).
        sample_with_ema (bool): Sample the EMA when the caller does not say which model.
        sample_shape (Sequence[int], optional): (C, H, W) of the noise; None reads it
            from the reference net at the first draw.
    """

    def __init__(self, test_scheduler: SchedulerMixin, codec: LatentCodec,
                 conditioner: Conditioner, num_inference_steps: int, guidance_scale: float,
                 sample_with_ema: bool, sample_shape: Optional[Sequence[int]] = None) -> None:
        self.test_scheduler = test_scheduler
        self.codec = codec
        self.conditioner = conditioner
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.sample_with_ema = sample_with_ema
        self.sample_shape = tuple(sample_shape) if sample_shape else None

    @torch.no_grad()
    def generate(self, inputs: Union[Tensor, dict], data_samples: Optional[DataSample],
                 nets: SamplingNets, preprocessor: nn.Module,
                 noise_fn: Optional[Callable[[Optional[Tensor], int], Tensor]] = None,
                 sample_fn: Optional[Callable[..., Tensor]] = None) -> List[DataSample]:
        """Samples a batch; see :meth:`DiffusionDistiller.generate` for ``inputs`` and
        the result.

        Args:
            inputs (Tensor | dict): Noise, or the sampling arguments.
            data_samples (DataSample, optional): Labels/prompts to condition on.
            nets (SamplingNets): The nets to choose from.
            preprocessor (nn.Module): Places the noise and destructs the images.
            noise_fn (Callable, optional): ``(noise, num_batches) -> noise``. Defaults to
                :meth:`noise` (the distiller passes its ``noise_fn``, so that an
                override reaches generation).
            sample_fn (Callable, optional): Like :meth:`sample`, its default.

        Returns:
            list[DataSample]: One sample per image.
        """
        if noise_fn is None:
            def noise_fn(noise: Optional[Tensor], num_batches: int) -> Tensor:
                return self.noise(noise, num_batches, nets.reference, preprocessor.device)
        sample_fn = sample_fn or self.sample
        if isinstance(inputs, Tensor):
            inputs = dict(noise=inputs)
        sample_kwargs = dict(inputs.get('sample_kwargs') or {})
        noise = inputs.get('noise')
        num_batches = noise.shape[0] if noise is not None else get_valid_num_batches(
            inputs, data_samples)
        noise = noise_fn(noise, num_batches)
        sample_model, net = self.sampling_net(inputs.get('sample_model'), nets)
        condition, uncondition, prompts = self.conditioner.sampling_condition(
            data_samples, sample_kwargs, num_batches, noise.device)
        steps = int(sample_kwargs.get('num_inference_steps', self.num_inference_steps))
        scale = float(sample_kwargs.get('guidance_scale', self.guidance_scale))

        images = sample_fn(net, noise, condition, uncondition, steps, scale)
        # No `noise` field: VisualizationHook grids every 3-D tensor field, and latent
        # noise (4 channels) cannot be tiled with RGB images.
        out = DataSample(fake_img=preprocessor.destruct(images, data_samples),
                         sample_model=sample_model)
        if sample_kwargs.get('with_teacher'):
            if nets.teacher is None:
                raise ValueError('sample_kwargs["with_teacher"] needs a teacher, but this '
                                 'distiller has teacher=None.')
            teacher_images = sample_fn(nets.teacher, noise, condition, uncondition, steps,
                                       scale)
            out.teacher_img = preprocessor.destruct(teacher_images, data_samples)
        if isinstance(data_samples, DataSample):
            out.update(data_samples)
        if prompts is not None:  # what was sampled from (CLIPScore pairs it with fake_img)
            out.prompt = prompts
        return out.split(allow_nonseq_value=True)

    def sampling_net(self, sample_model: Optional[str],
                     nets: SamplingNets) -> Tuple[str, nn.Module]:
        """Resolves 'orig' / 'ema' / 'teacher' (None: ``sample_with_ema``) to
        (the name sampled, the net)."""
        ema = nets.ema
        if sample_model is None:
            sample_model = 'ema' if (self.sample_with_ema and ema is not None) else 'orig'
        check_choice('sample_model', sample_model, SAMPLE_MODELS)
        if sample_model == 'teacher':
            if nets.teacher is None:
                raise ValueError("sample_model='teacher' needs a teacher, but this "
                                 "distiller has teacher=None; sample 'orig' or 'ema'.")
            return sample_model, nets.teacher
        if sample_model == 'ema' and ema is not None:
            return sample_model, ema.module if isinstance(ema, BaseAveragedModel) else ema
        # MMagic metrics ask for 'ema' by default; without an EMA the student is it.
        return 'orig', nets.student

    def noise(self, noise: Optional[Tensor], num_batches: int, reference_net: nn.Module,
              device: Device) -> Tensor:
        """Initial noise (B, C, H, W) on ``device``; a given tensor is only moved."""
        if noise is not None:
            return noise.to(device)
        return torch.randn(num_batches, *self.shape(reference_net), device=device)

    def shape(self, reference_net: nn.Module) -> Tuple[int, ...]:
        """(C, H, W) of the denoiser input, read once from ``reference_net``."""
        if self.sample_shape is None:
            x_t = example_denoiser_inputs(reference_net, batch_size=1)['x_t']
            self.sample_shape = tuple(x_t.shape[1:])
        return self.sample_shape

    @torch.no_grad()
    def sample(self, net: nn.Module, noise: Tensor, condition: Optional[Tensor] = None,
               uncondition: Optional[Tensor] = None, num_inference_steps: Optional[int] = None,
               guidance_scale: float = 1.0) -> Tensor:
        """Runs :func:`denoise` with the test scheduler from ``noise`` and decodes:
        images (B, 3, H, W) in the data preprocessor's normalised range."""
        x_0 = denoise(net, noise, self.test_scheduler,
                      num_inference_steps or self.num_inference_steps, condition,
                      uncondition, guidance_scale)
        return self.codec.decode(x_0)
