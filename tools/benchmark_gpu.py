"""Every GPU measurement of the Jacobian term's cost in one run, written to one JSON.

Three sections, each a list of rows measured in this one process (one model pair at a time,
freed before the next; peak memory is ``torch.cuda.max_memory_allocated`` from a reset
before the timed iterations: weights, Adam state and activations):

* ``loss``: one training iteration (forward, backward, Adam step) of DSM+KD and of
  DSM+KD+2ndM on the google/ddpm-cifar10-32 layout (35.7M), with the levers that may make
  the Jacobian term cheaper, each measured alone: ``batch_fraction=0.25``, bf16 autocast
  (of the whole iteration, and of the Jacobian pass only, whose term is compared with
  fp32 on the same weights, inputs and directions), channels-last, activation
  checkpointing of the student's forward, ``torch.compile`` (and its CUDA-graph mode at
  a host-bound small batch). Every ratio is to DSM+KD under the same lever in the same run.
* ``layouts``: one training iteration with the config's losses (DSM + KD + 2ndM with the
  config's settings; the SD config's feature term is not included) at the config's
  per-GPU batch, or the largest power-of-two fraction of it that fits, on the real-size
  layout of every config with random weights: the student pruned as the config prunes
  (local pruning at the config's ratios: the widths do not depend on the importance
  criterion, so magnitude importance is used), depth-pruned DiT D14 (14 of 28 blocks),
  BK-SDM-Base from the SD U-Net. Latents and text states are random (no VAE or text
  encoder in the iteration).
* ``sampling``: DDIM-100 (no guidance) of every pruned student against its dense teacher,
  batch 1 (all 100 steps) and batch 64 (``timed_steps`` steps, scaled to 100).

Rows that fail (out of memory, an unsupported lever) record the error instead of numbers;
rows left when ``--deadline`` seconds have passed are recorded as skipped. The JSON is
rewritten after every row, so a run stopped early keeps what it measured.

On a machine whose Python has torch and diffusers but no MMagic/MMCV build (the GPU image),
``--light-imports`` loads the torch-level modules this benchmark uses (losses, layouts,
denoiser adapters, pruning) without importing the package's MMagic registrations:

    # here (package registries reachable): the pure-Python wheels the image lacks, in a
    # git-ignored folder that travels with the working tree
    pip download --no-deps -d .devwheels diffusers==0.28.2 huggingface_hub==0.25.2 \\
        torch-pruning==1.6.1
    # there (no row starts after --deadline seconds; the JSON is written row by row)
    python3 -m pip install --no-deps --no-index --target /tmp/site .devwheels/*.whl
    PYTHONPATH=/tmp/site:. python3 tools/benchmark_gpu.py --preset device --light-imports \\
        --deadline 400 --out gpu_benchmark.json

``--preset tiny`` runs every section on small layouts in a minute on a CPU (the test).
"""
import argparse
import contextlib
import copy
import gc
import importlib
import json
import os.path as osp
import platform
import sys
import time
import traceback
import types
from typing import Callable, Dict, Optional

import torch
from torch import Tensor, nn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SECTIONS = ('loss', 'layouts', 'sampling')

# Real-size cases: the layout of each config's teacher and how the config makes its student.
# ``batch`` is the config's per-GPU batch, ``prune`` the DiffusionPruningHook's ratios,
# ``jacobian`` the config's 2ndMatchLoss (tests/test_tools/test_benchmark_gpu.py reads
# every config and checks these against it).
CASES = {
    'cifar10': dict(config='configs/2ndm_cifar10.py', model='UNet2DModel',
                    layout='DDPM_CIFAR10_32', batch=128,
                    prune=dict(ratio=0.3, groupnorm_ratio=0.25)),
    'lsun': dict(config='configs/2ndm_lsun.py', model='UNet2DModel', layout='DDPM_LSUN_256',
                 batch=16, prune=dict(ratio=0.3, groupnorm_ratio=0.25)),
    'ldm4_cin256': dict(config='configs/2ndm_imagenet_ldm.py', model='UNet2DConditionModel',
                        layout='LDM4_CIN256', batch=32, seq_len=1,
                        prune=dict(ratio=0.32, groupnorm_ratio=0.27)),
    'dit_xl2': dict(config='configs/2ndm_imagenet_dit.py', model='DiTTransformer2DModel',
                    layout='DIT_XL_2_256', batch=32, prune=dict(ratio=0.3)),
    'dit_xl2_d14': dict(config='configs/2ndm_imagenet_dit_d14.py',
                        model='DiTTransformer2DModel', layout='DIT_XL_2_256', batch=32,
                        depth=dict(keep=2, group_size=4)),
    'sd_bk_sdm_base': dict(config='configs/2ndm_mscoco_sd.py', model='UNet2DConditionModel',
                           layout='SD_V1_UNET', batch=8, seq_len=77, bk_sdm='base'),
}
JACOBIAN = dict(loss_weight=0.1, num_projections=1, mode='jvp')  # every config's 2ndM

# Small stand-ins of the layouts (same block types), for --preset tiny.
TINY_LAYOUTS = {
    'DDPM_CIFAR10_32': dict(block_out_channels=(16, 32, 32, 32), norm_num_groups=8,
                            sample_size=16),
    'DDPM_LSUN_256': dict(block_out_channels=(8, 8, 16, 16, 32, 32), norm_num_groups=4,
                          sample_size=64),
    'LDM4_CIN256': dict(block_out_channels=(16, 32, 48, 64), norm_num_groups=8,
                        cross_attention_dim=16, sample_size=16),
    'DIT_XL_2_256': dict(num_attention_heads=2, attention_head_dim=8, num_layers=8,
                         sample_size=8, num_embeds_ada_norm=10),
    'SD_V1_UNET': dict(block_out_channels=(32, 64, 64, 64), norm_num_groups=8,
                       attention_head_dim=2, cross_attention_dim=16, sample_size=16),
}

PRESETS = {
    'device': dict(loss_batches=(64, 128), small_batch=8, lever_batch=64,
                   sample_batches=(1, 64), timed_steps={1: 100, 64: 20},
                   warmup=2, repeats=5, sample_repeats=2, tiny=False),
    'tiny': dict(loss_batches=(2, ), small_batch=1, lever_batch=2, sample_batches=(1, 2),
                 timed_steps={1: 4, 2: 2}, warmup=1, repeats=1, sample_repeats=1,
                 tiny=True),
}


# ----------------------------------------------------------------------------- imports
HIDDEN_PACKAGES = ('peft', 'transformers')


class _NoRegistry:
    """Stands in for MMagic's MODELS registry under ``--light-imports``: the benchmark
    builds its modules directly, so registration is not needed (and not possible without
    MMagic)."""

    def register_module(self, name=None, force=False, module=None):
        return module if module is not None else (lambda obj: obj)


def light_imports() -> None:
    """Makes the torch-level modules importable without MMagic, MMCV or MMEngine.

    The package's ``__init__`` files register every component into MMagic's registries;
    here the packages are entered as bare namespaces (their ``__init__`` is not run) and
    ``mmagic.registry.MODELS`` is a no-op registry. Only modules that need nothing else
    from MMagic load this way (losses, layouts, denoisers, pruning, sampling, BK-SDM).
    ``HIDDEN_PACKAGES`` are made unimportable.
    """
    if 'mmagic' in sys.modules or 'diffusers' in sys.modules:
        raise RuntimeError('--light-imports must run before MMagic or diffusers is imported.')
    # Not needed here, and on the GPU image their versions do not fit the diffusers this
    # project pins (diffusers would route U-Net forwards through peft, which imports that
    # image's transformers): hidden, diffusers sees them as not installed.
    for name in HIDDEN_PACKAGES:
        sys.modules[name] = None
    mmagic = types.ModuleType('mmagic')
    registry = types.ModuleType('mmagic.registry')
    registry.MODELS = _NoRegistry()
    mmagic.registry = registry
    sys.modules.update({'mmagic': mmagic, 'mmagic.registry': registry})
    for package in ('mmdiff_2ndm', 'mmdiff_2ndm.models', 'mmdiff_2ndm.models.losses',
                    'mmdiff_2ndm.pruning', 'mmdiff_2ndm.utils'):
        module = types.ModuleType(package)
        module.__path__ = [osp.join(ROOT, *package.split('.'))]
        sys.modules[package] = module
    # The losses package's __init__ is skipped: load the modules the step uses by name.
    for name in ('dsm_loss', 'kd_loss', 'second_order_match_loss'):
        importlib.import_module(f'mmdiff_2ndm.models.losses.{name}')


def project():
    """The project's modules this benchmark uses (imported once, after ``light_imports``
    where requested)."""
    from mmdiff_2ndm.models import layouts
    from mmdiff_2ndm.models.block_removal import block_removed_unet
    from mmdiff_2ndm.models.denoisers import run_denoiser
    from mmdiff_2ndm.models.losses.dsm_loss import DSMLoss
    from mmdiff_2ndm.models.losses.kd_loss import KDLoss
    from mmdiff_2ndm.models.losses.second_order_match_loss import SecondOrderMatchLoss
    from mmdiff_2ndm.models.sampling import denoise
    from mmdiff_2ndm.pruning.depth import apply_depth
    from mmdiff_2ndm.pruning.structural import prune_denoiser
    return types.SimpleNamespace(
        layouts=layouts, block_removed_unet=block_removed_unet, run_denoiser=run_denoiser,
        DSMLoss=DSMLoss, KDLoss=KDLoss, SecondOrderMatchLoss=SecondOrderMatchLoss,
        denoise=denoise, apply_depth=apply_depth, prune_denoiser=prune_denoiser)


# ------------------------------------------------------------------------------ models
def build_teacher(case: dict, device: torch.device, tiny: bool) -> nn.Module:
    """The case's dense layout with random weights (seed 0), built on ``device``."""
    import diffusers
    P = project()
    layout = dict(getattr(P.layouts, case['layout']))
    if tiny:
        layout.update(TINY_LAYOUTS[case['layout']])
    torch.manual_seed(0)
    with torch.device(device):
        net = getattr(diffusers, case['model'])(**layout)
    return net.eval().requires_grad_(False)


def build_student(case: dict, teacher: nn.Module, tiny: bool) -> nn.Module:
    """The case's student, made from the teacher the way its config makes it."""
    P = project()
    if 'bk_sdm' in case:
        student = P.block_removed_unet(teacher, case['bk_sdm'])
    elif 'depth' in case:
        student = copy.deepcopy(teacher)
        blocks = len(student.transformer_blocks)
        keep, group = case['depth']['keep'], case['depth']['group_size']
        # which blocks stay does not change the cost: the first `keep` of every group
        kept = [i for i in range(blocks) if i % group < keep]
        P.apply_depth(student, dict(module='transformer_blocks', kept=kept,
                                    num_blocks=blocks))
    else:
        student = copy.deepcopy(teacher)
        P.prune_denoiser(student, importance='magnitude', with_macs=False, **case['prune'])
    return student.to(next(teacher.parameters()).device).train().requires_grad_(True)


def case_inputs(case: dict, net: nn.Module, batch: int, device: torch.device,
                seed: int = 0) -> Dict[str, Optional[Tensor]]:
    """x_0, noise, timesteps and condition of one batch for the case's layout."""
    config = net.config
    gen = torch.Generator(device='cpu').manual_seed(seed)
    size = config.sample_size
    channels = config.in_channels
    x_0 = torch.randn(batch, channels, size, size, generator=gen)
    noise = torch.randn(batch, channels, size, size, generator=gen)
    timesteps = torch.randint(0, 1000, (batch, ), generator=gen)
    condition = None
    if case['model'] == 'DiTTransformer2DModel':
        condition = torch.randint(0, config.num_embeds_ada_norm, (batch, ), generator=gen)
    elif case['model'] == 'UNet2DConditionModel':
        condition = torch.randn(batch, case['seq_len'], config.cross_attention_dim,
                                generator=gen)
    out = dict(x_0=x_0, noise=noise, timesteps=timesteps, condition=condition)
    return {k: v.to(device) if v is not None else None for k, v in out.items()}


# ------------------------------------------------------------------------ training step
def make_step(student: nn.Module, teacher: nn.Module, jacobian: Optional[dict],
              amp: Optional[torch.dtype] = None, jacobian_amp: Optional[torch.dtype] = None,
              checkpoint: bool = False, compile_mode: Optional[str] = None
              ) -> Callable[[Dict[str, Tensor]], Tensor]:
    """One training iteration (DSM + KD [+ 2ndM], backward, Adam step) as a function of a
    batch; returns the loss. Levers: ``amp`` autocasts the whole iteration,
    ``jacobian_amp`` only the Jacobian pass, ``checkpoint`` recomputes the student's
    activations in the backward, ``compile_mode`` compiles both networks."""
    from diffusers import DDPMScheduler
    P = project()
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    dsm, kd = P.DSMLoss(), P.KDLoss()
    jac_loss = P.SecondOrderMatchLoss(**jacobian) if jacobian is not None else None
    device_type = next(student.parameters()).device.type
    student_net, teacher_net = student, teacher
    if compile_mode is not None:
        student_net = torch.compile(student, mode=compile_mode)
        teacher_net = torch.compile(teacher, mode=compile_mode)

    def call(net, x, t, condition):
        if checkpoint and net is student_net:
            return torch.utils.checkpoint.checkpoint(P.run_denoiser, net, x, t, condition,
                                                     use_reentrant=False)
        return P.run_denoiser(net, x, t, condition)

    def as_fn(net, t, condition):
        def fn(x, batch_index=None):
            if batch_index is None:
                return call(net, x, t, condition)
            return call(net, x, t[batch_index],
                        None if condition is None else condition[batch_index])
        return fn

    def autocast(dtype):
        return (torch.autocast(device_type, dtype=dtype) if dtype is not None else
                contextlib.nullcontext())

    def step(batch: Dict[str, Tensor]) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        t, condition, eps = batch['timesteps'], batch['condition'], batch['noise']
        x_t = scheduler.add_noise(batch['x_0'], eps, t)
        with autocast(amp):
            if jac_loss is None:
                out_s = call(student_net, x_t, t, condition)
                with torch.no_grad():
                    out_t = call(teacher_net, x_t, t, condition)
                loss = dsm(out_s, eps) + kd(out_s, out_t)
            else:
                with autocast(jacobian_amp):
                    out = jac_loss(as_fn(student_net, t, condition),
                                   as_fn(teacher_net, t, condition), x_t,
                                   return_outputs=True)
                out_s = out.student_out.float()
                loss = (dsm(out_s, eps) + kd(out_s, out.teacher_out.float()) +
                        out.loss.float())
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_step(step: Callable, batch: Dict[str, Tensor], device: torch.device, warmup: int,
              repeats: int) -> Dict[str, float]:
    """Median seconds of ``repeats`` calls after ``warmup`` calls; peak memory of the
    timed calls (CUDA only)."""
    for _ in range(warmup):
        step(batch)
    _sync(device)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(batch)
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    peak = torch.cuda.max_memory_allocated(device) if device.type == 'cuda' else None
    return dict(seconds=times[len(times) // 2], peak_bytes=peak)


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or 'out of memory' in str(err)


# ----------------------------------------------------------------------------- runner
class Benchmark:
    """Runs the rows, writes the JSON after each one and keeps to the deadline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.preset = PRESETS[args.preset]
        self.device = torch.device(args.device)
        self.start = time.perf_counter()
        self.results = dict(
            command=' '.join([osp.basename(sys.executable)] + sys.argv),
            device=(torch.cuda.get_device_name(self.device) if self.device.type == 'cuda'
                    else platform.processor() or 'cpu'),
            torch=torch.__version__, preset=args.preset, light_imports=args.light_imports,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            cudnn_tf32=torch.backends.cudnn.allow_tf32,
            loss=[], layouts=[], sampling=[])

    def write(self) -> None:
        if self.args.out:
            with open(self.args.out, 'w', encoding='utf-8') as f:
                json.dump(self.results, f, indent=1)

    def row(self, section: str, fields: dict, measure: Callable[[], dict]) -> dict:
        """Measures one row (or records why not) and writes the JSON."""
        elapsed = time.perf_counter() - self.start
        row = dict(fields)
        if self.args.deadline and elapsed > self.args.deadline:
            row['skipped'] = f'deadline ({self.args.deadline} s) passed'
        else:
            try:
                row.update(measure())
            except Exception as err:  # noqa: BLE001  (recorded, the run goes on)
                row['error'] = f'{type(err).__name__}: {str(err).splitlines()[0][:300]}'
                if not _is_oom(err):
                    traceback.print_exc()
            finally:
                _free()
        self.results[section].append(row)
        self.write()
        print(json.dumps(row), flush=True)
        return row

    # ------------------------------------------------------------------ loss section
    def loss_row(self, variant: str, batch: int, jacobian: Optional[dict], **levers) -> dict:
        case = CASES['cifar10']

        def measure():
            teacher = build_teacher(case, self.device, self.preset['tiny'])
            student = copy.deepcopy(teacher).train().requires_grad_(True)
            if levers.get('channels_last'):
                teacher = teacher.to(memory_format=torch.channels_last)
                student = student.to(memory_format=torch.channels_last)
            step = make_step(student, teacher, jacobian, amp=levers.get('amp'),
                             jacobian_amp=levers.get('jacobian_amp'),
                             checkpoint=levers.get('checkpoint', False),
                             compile_mode=levers.get('compile'))
            inputs = case_inputs(case, teacher, batch, self.device)
            if levers.get('channels_last'):
                inputs['x_0'] = inputs['x_0'].contiguous(memory_format=torch.channels_last)
            return time_step(step, inputs, self.device, self.preset['warmup'],
                             self.preset['repeats'])

        names = {k: (str(v).replace('torch.', '') if v is not None else None)
                 for k, v in levers.items()}
        return self.row('loss', dict(variant=variant, batch=batch, **names), measure)

    def jacobian_precision_row(self, batch: int) -> dict:
        """The Jacobian term in bf16 autocast against fp32: same weights, x_t, v."""
        case = CASES['cifar10']
        P = project()

        def measure():
            teacher = build_teacher(case, self.device, self.preset['tiny'])
            student = copy.deepcopy(teacher)
            with torch.no_grad():  # a student that differs from its teacher
                for p in student.parameters():
                    p.mul_(1 + 0.05 * torch.randn_like(p))
            inputs = case_inputs(case, teacher, batch, self.device)
            from diffusers import DDPMScheduler
            x_t = DDPMScheduler(num_train_timesteps=1000).add_noise(
                inputs['x_0'], inputs['noise'], inputs['timesteps'])
            v = torch.randn_like(x_t)
            v = v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            t = inputs['timesteps']
            values = {}
            for name, dtype in (('fp32', None), ('bf16', torch.bfloat16)):
                loss = P.SecondOrderMatchLoss(**dict(JACOBIAN, loss_weight=1.0))
                ctx = (torch.autocast(self.device.type, dtype=dtype) if dtype else
                       contextlib.nullcontext())
                with ctx:
                    values[name] = float(loss(
                        lambda x: P.run_denoiser(student, x, t, None),
                        lambda x: P.run_denoiser(teacher, x, t, None), x_t,
                        directions=v))
            return dict(term_fp32=values['fp32'], term_bf16=values['bf16'],
                        relative_difference=abs(values['bf16'] - values['fp32']) /
                        abs(values['fp32']))

        return self.row('loss', dict(variant='jacobian term bf16 vs fp32', batch=batch),
                        measure)

    def run_loss(self) -> None:
        p = self.preset
        jac = dict(JACOBIAN)
        for batch in p['loss_batches']:
            self.loss_row('dsm_kd', batch, None)
            self.loss_row('jvp', batch, jac)
            self.loss_row('jvp', batch, dict(jac, batch_fraction=0.25), batch_fraction=0.25)
        b, bf16 = p['lever_batch'], torch.bfloat16
        self.jacobian_precision_row(b)
        self.loss_row('jvp', b, jac, jacobian_amp=bf16)
        self.loss_row('dsm_kd', b, None, amp=bf16)
        self.loss_row('jvp', b, jac, amp=bf16)
        self.loss_row('dsm_kd', b, None, channels_last=True)
        self.loss_row('jvp', b, jac, channels_last=True)
        self.loss_row('dsm_kd', b, None, checkpoint=True)
        self.loss_row('jvp', b, jac, checkpoint=True)
        self.loss_row('dsm_kd', p['small_batch'], None)
        self.loss_row('jvp', p['small_batch'], jac)

    def run_compile(self) -> None:
        """torch.compile levers, last: their warm-up compiles (slow)."""
        p, jac = self.preset, dict(JACOBIAN)
        self.loss_row('dsm_kd', p['lever_batch'], None, compile='default')
        self.loss_row('jvp', p['lever_batch'], jac, compile='default')
        self.loss_row('dsm_kd', p['small_batch'], None, compile='reduce-overhead')
        self.loss_row('jvp', p['small_batch'], jac, compile='reduce-overhead')

    # --------------------------------------------------------------- layouts section
    def cases(self):
        return [(name, CASES[name]) for name in self.args.cases]

    def run_layouts(self) -> None:
        for name, case in self.cases():
            state = {}

            def models():
                if 'teacher' not in state:
                    state['teacher'] = build_teacher(case, self.device, self.preset['tiny'])
                    state['student'] = build_student(case, state['teacher'],
                                                     self.preset['tiny'])
                return state['teacher'], state['student']

            for variant, jacobian in (('dsm_kd', None), ('jvp', dict(JACOBIAN))):
                self.row('layouts', dict(case=name, config=case['config'], variant=variant,
                                         config_batch=case['batch']),
                         lambda: self._largest_batch(case, models, jacobian))
            state.clear()
            _free()

    def _largest_batch(self, case: dict, models: Callable, jacobian: Optional[dict]) -> dict:
        """Times the iteration at the config's batch, halving it while it does not fit."""
        teacher, student = models()
        batch = case['batch'] if not self.preset['tiny'] else 2
        while True:
            try:
                # a fresh copy: a failed try must not leave Adam state or grads behind
                trial = copy.deepcopy(student)
                step = make_step(trial, teacher, jacobian)
                timing = time_step(step, case_inputs(case, teacher, batch, self.device),
                                   self.device, 1, max(1, self.preset['repeats'] - 2))
                count = sum(q.numel() for q in student.parameters())
                return dict(timing, batch=batch, images_per_s=batch / timing['seconds'],
                            student_params=count,
                            teacher_params=sum(q.numel() for q in teacher.parameters()))
            except Exception as err:  # noqa: BLE001
                if not _is_oom(err) or batch == 1:
                    raise
                del trial, step
                _free()
                batch //= 2

    # -------------------------------------------------------------- sampling section
    def run_sampling(self) -> None:
        from diffusers import DDIMScheduler
        P = project()
        for name, case in self.cases():
            state = {}
            for batch in self.preset['sample_batches']:
                steps = self.preset['timed_steps'][batch]

                def measure(batch=batch, steps=steps):
                    if 'teacher' not in state:
                        state['teacher'] = build_teacher(case, self.device,
                                                         self.preset['tiny'])
                        state['student'] = build_student(
                            case, state['teacher'], self.preset['tiny']).eval()
                    row = {}
                    for role in ('teacher', 'student'):
                        net = state[role]
                        inputs = case_inputs(case, net, batch, self.device)

                        def sample():
                            with torch.no_grad():
                                P.denoise(net, inputs['noise'],
                                          DDIMScheduler(num_train_timesteps=1000), steps,
                                          inputs['condition'])

                        sample()  # warm-up
                        times = []
                        for _ in range(self.preset['sample_repeats']):
                            _sync(self.device)
                            start = time.perf_counter()
                            sample()
                            _sync(self.device)
                            times.append(time.perf_counter() - start)
                        row[f'{role}_seconds_ddim100'] = min(times) * 100 / steps
                        row[f'{role}_params'] = sum(q.numel() for q in net.parameters())
                    row['speedup'] = row['teacher_seconds_ddim100'] / row[
                        'student_seconds_ddim100']
                    return row

                self.row('sampling', dict(case=name, batch=batch, timed_steps=steps),
                         measure)
            state.clear()
            _free()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', choices=sorted(PRESETS), default='device')
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS) + ['compile'],
                        choices=list(SECTIONS) + ['compile'])
    parser.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES),
                        help='real-size cases of the layouts and sampling sections')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--deadline', type=float, default=0,
                        help='seconds after which the remaining rows are skipped (0: none)')
    parser.add_argument('--light-imports', action='store_true',
                        help='load the torch-level modules without MMagic (see above)')
    parser.add_argument('--out', help='JSON written after every row')
    args = parser.parse_args()
    if args.light_imports:
        light_imports()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: this torch sees no CUDA device.')
    bench = Benchmark(args)
    for section in ('loss', 'layouts', 'sampling', 'compile'):
        if section in args.sections:
            getattr(bench, f'run_{section}')()
    bench.results['seconds_total'] = time.perf_counter() - bench.start
    bench.write()


if __name__ == '__main__':
    main()
