"""Cost of one 2ndMatch training iteration on the CIFAR-10 DDPM architecture.

Prints time and peak memory per training iteration (forward + backward + Adam step)
for DSM only, DSM+KD, DSM+KD+2ndM ('jvp'), DSM+KD+2ndM ('vjp'), and a straightforward
reference of the authors' approach (double backward with the teacher's J^T v taken
with ``create_graph=True`` and nothing detached), as ratios to DSM+KD.

Each variant runs in a fresh subprocess, so that one variant's allocations cannot
raise another's peak. Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA
(absolute, includes weights and optimizer state) and, on CPU, the growth of the
process's peak resident set size (``ru_maxrss``) over the resident size right
before the first iteration (weights and inputs excluded; optimizer state and
allocator caching included).

Example (quick CPU run):
    python tools/benchmark_loss.py --batch 2 --repeats 2
"""
import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

VARIANTS = ('dsm', 'dsm_kd', '2ndm_jvp', '2ndm_vjp', 'reference')
LABELS = {
    'dsm': 'DSM',
    'dsm_kd': 'DSM+KD',
    '2ndm_jvp': "DSM+KD+2ndM 'jvp'",
    '2ndm_vjp': "DSM+KD+2ndM 'vjp'",
    'reference': 'reference (authors, teacher graph kept)',
}


def build_unet(args) -> nn.Module:
    """The google/ddpm-cifar10-32 layout with random weights (widths overridable)."""
    from diffusers import UNet2DModel

    from mmdiff_2ndm.models.layouts import DDPM_CIFAR10_32
    channels = tuple(int(c) for c in args.channels.split(','))
    down = ['DownBlock2D'] * len(channels)
    down[1] = 'AttnDownBlock2D'  # attention at 16x16 for 32x32 inputs
    up = ['UpBlock2D'] * len(channels)
    up[-2] = 'AttnUpBlock2D'
    layout = dict(DDPM_CIFAR10_32, sample_size=args.size, block_out_channels=channels,
                  layers_per_block=args.layers_per_block, down_block_types=tuple(down),
                  up_block_types=tuple(up))
    return UNet2DModel(**layout)


def make_step(variant: str, student: nn.Module, teacher: nn.Module,
              optimizer: torch.optim.Optimizer) -> Callable[[Tensor, Tensor, Tensor], None]:
    """Returns one training iteration of ``variant`` as a function of (x_t, t, eps)."""
    from mmdiff_2ndm.models.losses import DSMLoss, KDLoss, SecondOrderMatchLoss, squared_error

    def student_fn(x, t):
        return student(x, t, return_dict=False)[0]

    def teacher_fn(x, t):
        return teacher(x, t, return_dict=False)[0]

    # The distiller's defaults: pixel-summed, batch-averaged, weight 1.
    dsm_loss, kd_loss = DSMLoss(), KDLoss()
    jac_loss = None
    if variant in ('2ndm_jvp', '2ndm_vjp'):
        jac_loss = SecondOrderMatchLoss(mode=variant.split('_')[1], loss_weight=0.1)

    def step(x_t: Tensor, t: Tensor, eps: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        if variant == 'dsm':
            loss = dsm_loss(student_fn(x_t, t), eps)
        elif variant == 'dsm_kd':
            out_s = student_fn(x_t, t)
            with torch.no_grad():
                out_t = teacher_fn(x_t, t)
            loss = dsm_loss(out_s, eps) + kd_loss(out_s, out_t)
        elif jac_loss is not None:
            out = jac_loss(lambda x: student_fn(x, t), lambda x: teacher_fn(x, t), x_t,
                           return_outputs=True)
            loss = (dsm_loss(out.student_out, eps) + kd_loss(out.student_out, out.teacher_out) +
                    out.loss)
        else:  # reference: both graphs kept, double backward through both
            with sdpa_kernel([SDPBackend.MATH]):
                x_ref = x_t.detach().requires_grad_(True)
                out_s, out_t = student_fn(x_ref, t), teacher_fn(x_ref, t)
                g = torch.randn_like(out_s)
                v = g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                (jtv_s, ) = torch.autograd.grad((out_s * v).sum(), x_ref, create_graph=True)
                (jtv_t, ) = torch.autograd.grad((out_t * v).sum(), x_ref, create_graph=True)
                jac = (jtv_s.pow(2).flatten(1).sum(1) -
                       jtv_t.pow(2).flatten(1).sum(1)).pow(2).mean()
                # KD without detaching the teacher: its graph is kept, as the authors'.
                loss = dsm_loss(out_s, eps) + squared_error(out_s, out_t) + 0.1 * jac
        loss.backward()
        optimizer.step()

    return step


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def run_single(args) -> Dict[str, float]:
    """Times one variant in this process and returns its numbers."""
    from diffusers import DDPMScheduler
    device = torch.device(args.device)
    torch.manual_seed(0)
    teacher = build_unet(args).to(device).eval().requires_grad_(False)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=2e-4)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    step = make_step(args.variant, student, teacher, optimizer)

    def batch():
        x_0 = torch.randn(args.batch, 3, args.size, args.size, device=device)
        eps = torch.randn_like(x_0)
        t = torch.randint(0, 1000, (args.batch, ), device=device)
        return scheduler.add_noise(x_0, eps, t), t, eps

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize()

    rss_before = _rss_bytes()
    for _ in range(args.warmup):
        step(*batch())
    sync()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(args.repeats):
        inputs = batch()
        sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        step(*inputs)
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated()
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return dict(variant=args.variant, seconds=statistics.median(times),
                cpu_seconds=statistics.median(cpu_times), peak_bytes=float(peak))


def _without_variants(argv):
    """argv less ``--variants X`` / ``--variants=X`` (each subprocess runs one)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == '--variants':
            skip = True
        elif not arg.startswith('--variants='):
            kept.append(arg)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--size', type=int, default=32, help='image size (H = W)')
    parser.add_argument('--repeats', type=int, default=5, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--channels', default='128,256,256,256',
                        help='block_out_channels, comma separated')
    parser.add_argument('--layers-per-block', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--variants', default=','.join(VARIANTS))
    parser.add_argument('--variant', help=argparse.SUPPRESS)  # internal: one subprocess
    args = parser.parse_args()

    if args.variant is not None:
        print(json.dumps(run_single(args)))
        return

    results = {}
    for variant in args.variants.split(','):
        if variant not in VARIANTS:
            raise ValueError(f'unknown variant {variant!r}; choose from {VARIANTS}')
        cmd = [sys.executable, __file__, '--variant', variant] + _without_variants(sys.argv[1:])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f'{variant}: failed\n{proc.stderr[-2000:]}', file=sys.stderr)
            continue
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])

    base = results.get('dsm_kd')
    memory = ('peak CUDA allocated' if args.device.startswith('cuda') else
              'peak RSS growth')
    print(f'device={args.device} batch={args.batch} size={args.size} '
          f'channels=({args.channels}) layers_per_block={args.layers_per_block} '
          f'repeats={args.repeats} torch={torch.__version__} threads={torch.get_num_threads()}')
    # Process CPU time (all threads) is steadier than wall time on a shared CPU host.
    print(f'{"variant":<42}{"ms/iter":>10}{"x DSM+KD":>10}{"CPU ms":>10}{"x DSM+KD":>10}'
          f'{memory + " MiB":>26}{"x DSM+KD":>10}')
    for variant, r in results.items():
        ratio = {key: r[key] / base[key] if base else float('nan')
                 for key in ('seconds', 'cpu_seconds', 'peak_bytes')}
        print(f'{LABELS[variant]:<42}{1e3 * r["seconds"]:>10.1f}{ratio["seconds"]:>10.2f}'
              f'{1e3 * r["cpu_seconds"]:>10.1f}{ratio["cpu_seconds"]:>10.2f}'
              f'{r["peak_bytes"] / 2**20:>26.1f}{ratio["peak_bytes"]:>10.2f}')


if __name__ == '__main__':
    main()
