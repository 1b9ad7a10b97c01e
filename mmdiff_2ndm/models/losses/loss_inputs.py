"""The calling contract between the distiller and its losses.

Every loss of ``DiffusionDistiller(losses=dict(name=cfg, ...))`` declares what it
consumes as a mapping ``loss_inputs = {forward argument: input field}`` (a class
attribute, or ``inputs=`` in the loss config, which wins). The distiller computes each
field that some loss consumes once per iteration and calls every loss with keywords::

    loss(**{argument: fields[field] for argument, field in loss_inputs.items()})

So any registered loss works, e.g. mmagic's ``L1Loss`` as output distillation::

    losses=dict(l1=dict(type='L1Loss', inputs=dict(pred='student_out',
                                                    target='teacher_out')))

A loss that consumes ``student_fn`` *runs the forwards*: at most one per distiller; it
is called first, with ``return_outputs=True``, and returns ``(loss, student_out,
teacher_out)`` (e.g. :class:`JacobianMatchOutput`), whose outputs the other losses
share, so each network runs one forward per iteration. Intermediate features are
recorded in those same forwards for losses that name layers (``feature_layers``).
"""
from typing import Dict, Mapping

from torch import nn

LOSS_INPUTS: Dict[str, str] = {
    'student_out': "the student's prediction on x_t (B, C, H, W), with its graph",
    'teacher_out': "the frozen teacher's prediction on x_t (B, C, H, W), detached",
    'target': "the training scheduler's regression target (noise, velocity or x_0)",
    'x_0': 'the clean inputs in diffusion space (scaled latents or pixels)',
    'noise': 'the noise added to x_0',
    'x_t': 'the noised inputs both networks see',
    'timesteps': 'the integer timesteps (B,)',
    'sigma_t': 'sqrt(1 - alpha_bar_t) per sample (B,), float32',
    'condition': 'class labels (B,) or encoder hidden states (B, L, D), or None',
    'iteration': 'the training iteration (int), for schedules',
    'directions': 'sample-tied projection directions, or None (per_sample_noise_seed)',
    'student_feats': "the student's recorded features, layer name -> tensor",
    'teacher_feats': "the teacher's recorded features, layer name -> tensor (detached)",
    'student_fn': 'the student as a function of x_t (the loss runs the forwards)',
    'teacher_fn': 'the teacher as a function of x_t',
}
TEACHER_INPUTS = ('teacher_out', 'teacher_feats', 'teacher_fn')
FORWARD_RUNNER_INPUT = 'student_fn'


def loss_inputs(loss: nn.Module, name: str = 'loss') -> Dict[str, str]:
    """The checked ``{forward argument: input field}`` mapping of a distiller loss.

    Args:
        loss (nn.Module): The loss module.
        name (str): Its key in ``losses``, for messages.

    Returns:
        dict: The mapping.

    Raises:
        ValueError: If the loss declares none, or names a field the distiller does not
            provide.
    """
    mapping = getattr(loss, 'loss_inputs', None)
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(
            f'losses.{name} ({type(loss).__name__}) does not say what it consumes: give '
            "`inputs=dict(<forward argument>=<field>)` in its config, e.g. "
            "inputs=dict(pred='student_out', target='teacher_out'); fields: "
            f'{sorted(LOSS_INPUTS)}.')
    unknown = sorted(set(mapping.values()) - set(LOSS_INPUTS))
    if unknown:
        raise ValueError(f'losses.{name} consumes unknown input field(s) {unknown}; the '
                         f'distiller provides {sorted(LOSS_INPUTS)}.')
    return dict(mapping)
