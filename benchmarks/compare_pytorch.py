"""Training throughput of tcvae-tf against a plain PyTorch beta-TCVAE, in one process.

Usage:
    pip install torch            # optional benchmark dependency, never a package dependency
    python benchmarks/compare_pytorch.py --arch mlp --batch-sizes 256,2048 --estimators mws,mss
    python benchmarks/compare_pytorch.py --arch conv --steps 2 --windows 3 --json
    python benchmarks/compare_pytorch.py --arch mlp --jit on,off --precision fp32,bf16

For each architecture, batch size and estimator, both implementations train on the same
synthetic binary 64x64 images: ours is BetaTCVAE's compiled Keras train function (as in
train_throughput.py), theirs a plain, idiomatic PyTorch model with the same layers, the same
TC-decomposed loss (alpha = 1, beta = 6, gamma = 1, MWS or MSS weights, [M, M, D]
log-density tensor built by broadcasting, as in the authors' code) and Adam(1e-3). Timed
windows of every configuration and both frameworks are interleaved round-robin (ours,
theirs, ours, theirs, ...) so that all see the same load; the script reports median
images/s and the ratio ours / theirs. --jit and --precision add variants of our step
(XLA on or off, bf16 mixed precision) to the same rotation.

For the MLP it also times a 4096 x 4096 fp32 `tf.matmul` in the same rotation, as the
achieved matrix-product peak, and reports the MLP step's achieved GFLOP/s and its fraction
of that peak. The step's FLOPs are counted as 3 x the forward matrix-product FLOPs
(forward, gradient of the activations, gradient of the weights): 2 x 3 x 14.19 M
multiply-adds = 85.1 MFLOP per image at D = 10.
"""

import argparse
import json
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import make_train_step, timed_window  # noqa: E402

DATASET_SIZE = 737280
ALPHA, BETA, GAMMA = 1.0, 6.0, 1.0


# -- the PyTorch reference ------------------------------------------------------------------


def torch_networks(arch, latent_dim):
    """The authors' encoder and decoder in PyTorch (NCHW), matching tcvae_tf.architectures."""
    from torch import nn

    if arch == "mlp":
        encoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4096, 1200), nn.ReLU(),
            nn.Linear(1200, 1200), nn.ReLU(),
            nn.Linear(1200, 2 * latent_dim),
        )
        decoder = nn.Sequential(
            nn.Linear(latent_dim, 1200), nn.Tanh(),
            nn.Linear(1200, 1200), nn.Tanh(),
            nn.Linear(1200, 1200), nn.Tanh(),
            nn.Linear(1200, 4096), nn.Unflatten(1, (1, 64, 64)),
        )
        return encoder, decoder
    if arch != "conv":
        raise ValueError(f"no PyTorch reference for arch {arch!r}; use mlp or conv")

    def conv_bn_relu(cin, cout, kernel, stride, padding):
        return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()]

    def deconv_bn_relu(cin, cout, kernel, stride, padding):
        return [nn.ConvTranspose2d(cin, cout, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(cout), nn.ReLU()]

    encoder = nn.Sequential(
        *conv_bn_relu(1, 32, 4, 2, 1),  # 64 -> 32
        *conv_bn_relu(32, 32, 4, 2, 1),  # 32 -> 16
        *conv_bn_relu(32, 64, 4, 2, 1),  # 16 -> 8
        *conv_bn_relu(64, 64, 4, 2, 1),  # 8 -> 4
        *conv_bn_relu(64, 512, 4, 1, 0),  # 4 -> 1
        nn.Conv2d(512, 2 * latent_dim, 1), nn.Flatten(),
    )
    decoder = nn.Sequential(
        nn.Unflatten(1, (latent_dim, 1, 1)),
        *deconv_bn_relu(latent_dim, 512, 1, 1, 0),
        *deconv_bn_relu(512, 64, 4, 1, 0),  # 1 -> 4
        *deconv_bn_relu(64, 64, 4, 2, 1),  # 4 -> 8
        *deconv_bn_relu(64, 32, 4, 2, 1),  # 8 -> 16
        *deconv_bn_relu(32, 32, 4, 2, 1),  # 16 -> 32
        nn.ConvTranspose2d(32, 1, 4, 2, 1),  # 32 -> 64
    )
    return encoder, decoder


def torch_log_normal(x, loc, log_scale):
    """Elementwise log N(x; loc, exp(log_scale))."""
    return -0.5 * ((x - loc) * (-log_scale).exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)


def torch_log_weights(batch_size, dataset_size, estimator):
    """log w [M, M] of MWS, or of MSS with 1/N on the diagonal (K = M - 1)."""
    import torch

    if estimator == "mws":
        return torch.full((batch_size, batch_size), -math.log(dataset_size * batch_size))
    num_others = batch_size - 1
    log_w = torch.full((batch_size, batch_size), -math.log(num_others))
    index = torch.arange(batch_size)
    log_w[index, index] = -math.log(dataset_size)
    log_w[index, (index + 1) % batch_size] = (
        math.log(dataset_size - num_others) - math.log(dataset_size) - math.log(num_others))
    return log_w


def torch_loss(images, encoder, decoder, log_w):
    """mean_i[ -log p(x_i|z_i) + alpha MI + beta TC + gamma DWKL ], authors' formulation."""
    import torch
    import torch.nn.functional as F

    batch_size = images.shape[0]
    loc, log_scale = encoder(images).chunk(2, dim=1)
    z = loc + log_scale.exp() * torch.randn_like(loc)
    logits = decoder(z)
    reconstruction = F.binary_cross_entropy_with_logits(logits, images, reduction="sum")
    reconstruction = reconstruction / batch_size
    log_qz_given_x = torch_log_normal(z, loc, log_scale).sum(1)
    log_pz = torch_log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    # [sample i, data j, dim d]
    log_q_matrix = torch_log_normal(z[:, None], loc[None], log_scale[None])
    log_qz = torch.logsumexp(log_q_matrix.sum(2) + log_w, dim=1)
    log_prod_qzi = torch.logsumexp(log_q_matrix + log_w[:, :, None], dim=1).sum(1)
    mi = (log_qz_given_x - log_qz).mean()
    tc = (log_qz - log_prod_qzi).mean()
    dwkl = (log_prod_qzi - log_pz).mean()
    return reconstruction + ALPHA * mi + BETA * tc + GAMMA * dwkl


def make_torch_step(arch, batch_size, estimator, latent_dim=10, seed=0):
    """Returns run_steps(n): n PyTorch train steps (forward, backward, Adam); last loss."""
    import numpy as np
    import torch

    torch.manual_seed(seed)
    encoder, decoder = torch_networks(arch, latent_dim)
    encoder.train()
    decoder.train()
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    images = np.random.default_rng(seed).random((batch_size, 1, 64, 64)) > 0.9
    images = torch.from_numpy(images.astype("float32"))
    log_w = torch_log_weights(batch_size, DATASET_SIZE, estimator)

    def run_steps(num_steps):
        for _ in range(num_steps):
            optimizer.zero_grad(set_to_none=True)
            loss = torch_loss(images, encoder, decoder, log_w)
            loss.backward()
            optimizer.step()
        return loss.item()

    return run_steps


# -- FLOP accounting ----------------------------------------------------------------------------


def mlp_flops_per_image(latent_dim=10):
    """3 x forward matrix-product FLOPs of the MLP encoder and decoder, per image."""
    encoder = 4096 * 1200 + 1200 * 1200 + 1200 * 2 * latent_dim
    decoder = latent_dim * 1200 + 2 * 1200 * 1200 + 1200 * 4096
    return 3 * 2 * (encoder + decoder)


def make_matmul_step(size=4096):
    """Returns run_steps(n) timing n fp32 [size, size] x [size, size] tf.matmul, and FLOPs."""
    import tensorflow as tf

    left = tf.random.normal([size, size], seed=1)
    right = tf.random.normal([size, size], seed=2)
    product = tf.function(lambda: tf.matmul(left, right))

    def run_steps(num_steps):
        for _ in range(num_steps):
            result = product()
        return float(result[0, 0])

    run_steps(1)
    return run_steps, 2 * size**3


# -- the interleaved run ------------------------------------------------------------------------


def cpu_flags():
    """AVX-512, AMX and BF16 flags of the first CPU in /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    wanted = ("avx512", "amx")
                    return sorted(f for f in flags if f.startswith(wanted) or "bf16" in f)
    except OSError:
        pass
    return []


def run(arch, batch_sizes, estimators, steps, windows, warmup, latent_dim, peak,
        with_pytorch=True, variants=(("auto", "fp32"),)):
    """Times every configuration, windows interleaved; returns one dict per our variant.

    Args:
      variants: (jit, precision) pairs of our train step to time, e.g. ("auto", "fp32"),
        ("off", "fp32"), ("off", "bf16"); the PyTorch step is always fp32.
    """
    import tensorflow as tf

    runners = {}  # name -> (run_steps, images or FLOPs per call)
    jit_used = {}
    for batch_size in batch_sizes:
        for estimator in estimators:
            for jit, precision in variants:
                ours, jit_used[jit] = make_train_step(arch, batch_size, estimator, precision,
                                                      jit, latent_dim)
                ours(warmup)
                runners[("tcvae_tf", jit, precision, batch_size, estimator)] = (ours, batch_size)
            if with_pytorch:
                theirs = make_torch_step(arch, batch_size, estimator, latent_dim)
                theirs(warmup + 1)
                runners[("pytorch", "", "fp32", batch_size, estimator)] = (theirs, batch_size)
    if peak:
        matmul, flops = make_matmul_step()
        runners[("matmul", "", "fp32", 0, "")] = (matmul, flops)
    rates = {name: [] for name in runners}
    load = []
    for _ in range(windows):
        load.append(os.getloadavg()[0])
        for name, (run_steps, amount) in runners.items():
            calls = 3 if name[0] == "matmul" else steps
            rates[name].append(timed_window(run_steps, calls, amount))
    median = {name: statistics.median(values) for name, values in rates.items()}
    peak_flops = median[("matmul", "", "fp32", 0, "")] if peak else None
    results = []
    for jit, precision in variants:
        for batch_size in batch_sizes:
            for estimator in estimators:
                name = ("tcvae_tf", jit, precision, batch_size, estimator)
                ours = median[name]
                result = {
                    "arch": arch, "batch_size": batch_size, "estimator": estimator,
                    "jit": jit, "jit_compile": jit_used[jit], "precision": precision,
                    "tcvae_tf_images_per_second": ours, "tcvae_tf_windows": rates[name],
                }
                if with_pytorch:
                    theirs_name = ("pytorch", "", "fp32", batch_size, estimator)
                    result.update(pytorch_images_per_second=median[theirs_name],
                                  ratio=ours / median[theirs_name],
                                  pytorch_windows=rates[theirs_name])
                if batch_size != batch_sizes[0]:
                    # Same-run ratio to the first batch size (e.g. 2048 against 256).
                    first = median[("tcvae_tf", jit, precision, batch_sizes[0], estimator)]
                    result[f"ratio_to_batch_{batch_sizes[0]}"] = ours / first
                if peak and arch == "mlp":
                    achieved = ours * mlp_flops_per_image(latent_dim)
                    result.update(mlp_gflops=achieved / 1e9,
                                  matmul_peak_gflops=peak_flops / 1e9,
                                  fraction_of_peak=achieved / peak_flops)
                results.append(result)
    context = {
        "cores": os.cpu_count(), "steps_per_window": steps, "windows": windows,
        "load_average_1min": load, "tensorflow": tf.__version__, "cpu_flags": cpu_flags(),
    }
    if peak:
        context["matmul_peak_windows_gflops"] = [
            rate / 1e9 for rate in rates[("matmul", "", "fp32", 0, "")]]
    if with_pytorch:
        import torch

        context.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    for result in results:
        result.update(context)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="mlp", help="mlp or conv")
    parser.add_argument("--batch-sizes", default="256,2048")
    parser.add_argument("--estimators", default="mws,mss")
    parser.add_argument("--steps", type=int, default=3, help="train steps per timed window")
    parser.add_argument("--windows", type=int, default=5, help="timed windows per config")
    parser.add_argument("--warmup", type=int, default=4, help="untimed steps per config")
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--jit", default="auto",
                        help="XLA for our step: auto (the training default), on, off, or "
                             "several comma-separated (each timed, interleaved)")
    parser.add_argument("--precision", default="fp32",
                        help="our precision(s): fp32, bf16 or both comma-separated")
    parser.add_argument("--no-peak", action="store_true",
                        help="skip the fp32 matmul peak (and the MLP's fraction of it)")
    parser.add_argument("--no-pytorch", action="store_true",
                        help="time tcvae-tf only (batch-size ratios, fraction of peak)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line")
    args = parser.parse_args()
    if not args.no_pytorch:
        try:
            import torch  # noqa: F401
        except ImportError:
            parser.exit(1, "compare_pytorch.py needs PyTorch (pip install torch), or pass "
                           "--no-pytorch\n")
    results = run(args.arch, [int(b) for b in args.batch_sizes.split(",")],
                  args.estimators.split(","), args.steps, args.windows, args.warmup,
                  args.latent_dim, peak=not args.no_peak, with_pytorch=not args.no_pytorch,
                  variants=[(jit, precision) for jit in args.jit.split(",")
                            for precision in args.precision.split(",")])
    for result in results:
        if args.json:
            print(json.dumps(result))
            continue
        line = (f"{result['arch']} batch {result['batch_size']} {result['estimator']}: "
                f"tcvae-tf (jit {result['jit']}={result['jit_compile']}, "
                f"{result['precision']}) {result['tcvae_tf_images_per_second']:.0f} images/s")
        if "ratio" in result:
            line += (f", PyTorch {result['pytorch_images_per_second']:.0f} images/s, ratio "
                     f"{result['ratio']:.2f}")
        for key, value in result.items():
            if key.startswith("ratio_to_batch_"):
                line += f", {value:.2f} x batch {key.rsplit('_', 1)[1]}"

        if "fraction_of_peak" in result:
            line += (f"; MLP {result['mlp_gflops']:.0f} GFLOP/s = "
                     f"{result['fraction_of_peak']:.0%} of the matmul peak "
                     f"{result['matmul_peak_gflops']:.0f} GFLOP/s")
        print(line)
    if not args.json and results:
        context = results[0]
        threads = f", torch threads {context['torch_threads']}" if "torch" in context else ""
        print(f"{context['cores']} cores{threads}, median of {context['windows']} interleaved "
              f"windows of {context['steps_per_window']} steps; 1-min load average "
              f"{', '.join(f'{x:.1f}' for x in context['load_average_1min'])}")


if __name__ == "__main__":
    main()
