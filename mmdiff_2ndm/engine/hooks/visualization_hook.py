"""DistillerVisualizationHook: a fixed-noise grid of the student, its EMA and the teacher."""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from torch import Tensor, nn

from mmagic.engine.hooks import VisualizationHook
from mmagic.registry import HOOKS
from mmagic.structures import DataSample
from ...models.sampling import SAMPLE_MODELS
from ...utils.image_grid import labelled_rows

ROW_LABELS = dict(orig='student', ema='EMA', teacher='teacher')


@HOOKS.register_module()
class DistillerVisualizationHook(VisualizationHook):
    """MMagic's ``VisualizationHook`` for ``DiffusionDistiller``: one grid per interval,
    a row each for the student, its EMA and the teacher, all sampled from the same noise,
    labelled (student / EMA / teacher) and titled with the iteration; tiles are upscaled
    (nearest) to at least 64 px, so 16x16 digits stay readable.

    Note:
        The noise (and, for conditional models, the class labels ``i % num_classes`` or
        the distiller's ``sample_prompts`` in order) is drawn once from ``seed`` and kept,
        so successive grids show how the same samples evolve. Sampling runs through the
        distiller's public ``generate`` on a forked RNG: the training draws, and so a
        resumed run, are unchanged by visualisation. Models that do not exist (no EMA, no
        teacher when training from scratch) are left out. Images go to every backend of
        MMEngine's visualizer (MMagic's local ``vis_data/vis_image/<name>_<iter>.png`` by
        default; ``--cfg-options visualizer.vis_backends.0.type=TensorboardVisBackend``
        for TensorBoard). Only the main process samples.

    Args:
        interval (int): Draw every this many training iterations. Defaults to 1000.
        n_samples (int): Samples per model (columns of the grid). Defaults to 8.
        n_row (int, optional): Images per grid row. Defaults to None: ``n_samples``, so
            each model is one row.
        sample_models (Sequence[str]): Which of ``'orig'`` (the raw student), ``'ema'``
            and ``'teacher'`` to draw, top to bottom. Defaults to all three.
        num_inference_steps (int, optional): Sampling steps. Defaults to None: the
            distiller's ``num_inference_steps``.
        seed (int): Seed of the fixed noise. Defaults to 0.
        name (str): Image name in the backends. Defaults to ``'student_ema_teacher'``.
        save_at_test (bool): Also save every test sample as MMagic's hook does.
            Defaults to False (``tools/sample.py`` writes samples).
        **kwargs: Other arguments of MMagic's ``VisualizationHook`` (``show``, ...).
    """

    def __init__(self,
                 interval: int = 1000,
                 n_samples: int = 8,
                 n_row: Optional[int] = None,
                 sample_models: Sequence[str] = SAMPLE_MODELS,
                 num_inference_steps: Optional[int] = None,
                 seed: int = 0,
                 name: str = 'student_ema_teacher',
                 save_at_test: bool = False,
                 **kwargs) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f'interval must be an int >= 1, got {interval!r}.')
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f'n_samples must be an int >= 1, got {n_samples!r}.')
        unknown = [m for m in sample_models if m not in SAMPLE_MODELS]
        if unknown or not sample_models:
            raise ValueError(f'sample_models must be a non-empty subset of {SAMPLE_MODELS}, '
                             f'got {list(sample_models)!r}.')
        super().__init__(interval=interval, vis_kwargs_list=[], fixed_input=True,
                         n_samples=n_samples, n_row=n_row, save_at_test=save_at_test,
                         **kwargs)
        self.sample_models = tuple(sample_models)
        self.num_inference_steps = num_inference_steps
        self.seed = int(seed)
        self.name = name
        self._noise: Optional[Tensor] = None  # (n_samples, C, H, W), CPU, drawn once

    @torch.no_grad()
    def vis_sample(self, runner: Runner, batch_idx: int, data_batch: dict = None,
                   outputs: Optional[dict] = None) -> None:
        """Samples every model from the fixed noise and adds the labelled grid to the
        visualizer."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        image = self.labelled_grid(self.sample_grid(model), batch_idx + 1)
        self._visualizer.add_image(self.name, image, step=batch_idx + 1)

    def labelled_grid(self, samples: List[DataSample], iteration: int) -> np.ndarray:
        """The picture of :meth:`sample_grid`'s samples: per model ``n_row`` images a row
        (upscaled, nearest, to tiles of at least 64 px), labelled student / EMA / teacher,
        titled with the iteration.

        Args:
            samples (list[DataSample]): From :meth:`sample_grid` (MMagic's BGR).
            iteration (int): The training iteration, for the title.

        Returns:
            np.ndarray: (H, W, 3) RGB uint8, as MMEngine's ``add_image`` takes it.
        """
        n_row = self.n_row or self.n_samples
        rows = []
        for sample_model in self.sample_models:
            key = f'{sample_model}_img'
            if key not in samples[0]:
                continue
            images = torch.stack([s.get(key) for s in samples]).flip(1)  # BGR -> RGB
            for start in range(0, len(samples), n_row):
                label = ROW_LABELS[sample_model] if start == 0 else ''
                rows.append((label, images[start:start + n_row]))
        return labelled_rows(rows, f'iteration {iteration}')

    def sample_grid(self, model: nn.Module) -> List[DataSample]:
        """One ``DataSample`` per noise with ``<model>_img`` (3, H, W) in [0, 255] for each
        model that exists (``orig_img``, ``ema_img``, ``teacher_img``)."""
        was_training = model.training
        model.eval()
        try:
            with _seeded_fork(self.seed):
                if self._noise is None:
                    self._noise = model.noise_fn(num_batches=self.n_samples).cpu()
                sample_kwargs = self._sample_kwargs(model)
                images: Dict[str, List[Tensor]] = {}
                for sample_model in self.sample_models:
                    if not _has_model(model, sample_model):
                        continue
                    outputs = model.generate(dict(noise=self._noise, sample_model=sample_model,
                                                  sample_kwargs=sample_kwargs))
                    images[f'{sample_model}_img'] = [out.fake_img.cpu() for out in outputs]
        finally:
            model.train(was_training)
        return [DataSample(**{key: value[i] for key, value in images.items()})
                for i in range(self.n_samples)]

    def _sample_kwargs(self, model: nn.Module) -> dict:
        """Fixed conditioning, so that every model and every grid sees the same."""
        kwargs = {}
        if self.num_inference_steps is not None:
            kwargs['num_inference_steps'] = int(self.num_inference_steps)
        if model.text_encoder is not None:
            prompts = model.sample_prompts
            if not prompts:
                raise ValueError('DistillerVisualizationHook on a text-conditioned distiller '
                                 'needs model.sample_prompts.')
            kwargs['prompt'] = [prompts[i % len(prompts)] for i in range(self.n_samples)]
        elif model.num_classes is not None:
            kwargs['labels'] = [i % int(model.num_classes) for i in range(self.n_samples)]
        return kwargs


def _has_model(model: nn.Module, sample_model: str) -> bool:
    """Whether the distiller holds the network ``sample_model`` names."""
    if sample_model == 'teacher':
        return model.teacher is not None
    if sample_model == 'ema':
        return getattr(model, 'student_ema', None) is not None
    return True


@contextlib.contextmanager
def _seeded_fork(seed: int) -> Iterator[None]:
    """Forks torch's CPU (and current CUDA) RNG, seeds it, and restores it on exit."""
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
        torch.manual_seed(seed)
        yield
