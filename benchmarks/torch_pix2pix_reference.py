r"""The PyTorch pix2pix reference's training step, timed on the same batch.

A yardstick for `python -m jaxcolor.benchmark` on a CPU: the networks and the
step of junyanz/pytorch-CycleGAN-and-pix2pix (models/networks.py
`UnetGenerator` + `NLayerDiscriminator`, models/pix2pix_model.py
`optimize_parameters`), written out here for L -> ab colorization:

  U-Net, num_downs 7 at 128 px (8 at 256), ngf 64, batch norm, dropout 0.5;
  PatchGAN, 3 layers, ndf 64, batch norm; Adam 2e-4, betas (0.5, 0.999);
  forward G; update D on (fake.detach(), real), loss halved; update G on
  GAN(D(fake), real) + 100 * L1 with D's parameters frozen.

The batch is synthetic and already a tensor (Lab in [-1, 1]): only the step is
timed, after `--warmup` steps, median of `--steps`. The last line printed is
one JSON object. Not part of the package and not imported by the tests;
needs `pip install torch`.

`--inference` times the generator alone at test time instead, as
`jaxcolor.colorize` runs ours (`generator_test_mode='eval'`): `.eval()` (batch
norm's running statistics, no dropout) under `torch.inference_mode()`, a batch
of L at `--image_size`; images/s of the forward pass.

  python benchmarks/torch_pix2pix_reference.py --image_size 128 --batch_size 16 --threads 2
"""

import argparse
import json
import os
import statistics
import time

import torch
from torch import nn


class UnetSkipConnectionBlock(nn.Module):
  """One U-Net level: [down, child, up] with the input concatenated to the
  output (except at the outermost level), as the reference nests them."""

  def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None,
               outermost=False, innermost=False, use_dropout=False):
    super().__init__()
    self.outermost = outermost
    input_nc = outer_nc if input_nc is None else input_nc
    # The reference's convolutions have no bias before batch norm.
    downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=False)
    downrelu = nn.LeakyReLU(0.2, True)
    downnorm = nn.BatchNorm2d(inner_nc)
    uprelu = nn.ReLU(True)
    upnorm = nn.BatchNorm2d(outer_nc)
    if outermost:
      upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
      model = [downconv, submodule, uprelu, upconv, nn.Tanh()]
    elif innermost:
      upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1,
                                  bias=False)
      model = [downrelu, downconv, uprelu, upconv, upnorm]
    else:
      upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2,
                                  padding=1, bias=False)
      model = [downrelu, downconv, downnorm, submodule, uprelu, upconv, upnorm]
      if use_dropout:
        model.append(nn.Dropout(0.5))
    self.model = nn.Sequential(*model)

  def forward(self, x):
    if self.outermost:
      return self.model(x)
    return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):

  def __init__(self, input_nc, output_nc, num_downs, ngf=64, use_dropout=True):
    super().__init__()
    block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
      block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block,
                                      use_dropout=use_dropout)
    block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block)
    block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block)
    block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block)
    self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc,
                                         submodule=block, outermost=True)

  def forward(self, x):
    return self.model(x)


class NLayerDiscriminator(nn.Module):

  def __init__(self, input_nc, ndf=64, n_layers=3):
    super().__init__()
    layers = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1),
              nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
      previous, mult = mult, min(2 ** n, 8)
      stride = 2 if n < n_layers else 1
      layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride=stride,
                           padding=1, bias=False),
                 nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
    self.model = nn.Sequential(*layers)

  def forward(self, x):
    return self.model(x)


def init_weights(net):
  """The reference's init_type='normal', gain 0.02."""
  for m in net.modules():
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
      nn.init.normal_(m.weight, 0.0, 0.02)
      if m.bias is not None:
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
      nn.init.normal_(m.weight, 1.0, 0.02)
      nn.init.zeros_(m.bias)


class Pix2PixStep:
  """`optimize_parameters` of the reference's Pix2PixModel (vanilla GAN)."""

  def __init__(self, num_downs, ngf=64, ndf=64, lambda_l1=100.0):
    self.generator = UnetGenerator(1, 2, num_downs, ngf)
    self.discriminator = NLayerDiscriminator(3, ndf)
    init_weights(self.generator)
    init_weights(self.discriminator)
    self.generator.train()
    self.discriminator.train()
    self.gan = nn.BCEWithLogitsLoss()
    self.l1 = nn.L1Loss()
    self.lambda_l1 = lambda_l1
    self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=2e-4,
                                  betas=(0.5, 0.999))
    self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=2e-4,
                                  betas=(0.5, 0.999))

  def _set_requires_grad(self, net, flag):
    for p in net.parameters():
      p.requires_grad = flag

  def __call__(self, lightness, ab):
    fake_ab = self.generator(lightness)
    # update D
    self._set_requires_grad(self.discriminator, True)
    self.opt_d.zero_grad()
    pred_fake = self.discriminator(torch.cat([lightness, fake_ab.detach()], 1))
    loss_d_fake = self.gan(pred_fake, torch.zeros_like(pred_fake))
    pred_real = self.discriminator(torch.cat([lightness, ab], 1))
    loss_d_real = self.gan(pred_real, torch.ones_like(pred_real))
    loss_d = (loss_d_fake + loss_d_real) * 0.5
    loss_d.backward()
    self.opt_d.step()
    # update G
    self._set_requires_grad(self.discriminator, False)
    self.opt_g.zero_grad()
    pred_fake = self.discriminator(torch.cat([lightness, fake_ab], 1))
    loss_g = (self.gan(pred_fake, torch.ones_like(pred_fake))
              + self.l1(fake_ab, ab) * self.lambda_l1)
    loss_g.backward()
    self.opt_g.step()
    return loss_d.item(), loss_g.item()


class _Inference:
  """The generator's forward pass as the reference's test.py runs it with
  --eval: running statistics, dropout off, no autograd."""

  def __init__(self, generator):
    self.generator = generator.eval()

  def __call__(self, lightness, ab):
    del ab
    with torch.inference_mode():
      return self.generator(lightness)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--num_downs", type=int, default=None,
                      help="default: 7 at 128 px, 8 at 256 px (1x1 bottleneck)")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--inference", action="store_true",
                      help="time the generator's test-time forward pass")
  args = parser.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  num_downs = args.num_downs or max(args.image_size.bit_length() - 1, 5)
  step = Pix2PixStep(num_downs)
  if args.inference:
    step = _Inference(step.generator)
  size = args.image_size
  lightness = torch.rand(args.batch_size, 1, size, size) * 2 - 1
  ab = (torch.rand(args.batch_size, 2, size, size) * 2 - 1) * 0.5
  load_before = os.getloadavg()[0]
  for _ in range(args.warmup):
    step(lightness, ab)
  times, cpu = [], time.process_time()
  for _ in range(args.steps):
    start = time.perf_counter()
    step(lightness, ab)  # .item() waits for the step (CPU: synchronous).
    times.append(time.perf_counter() - start)
  cpu = (time.process_time() - cpu) / args.steps
  median = statistics.median(times)
  print(json.dumps({
      "framework": f"torch {torch.__version__}", "image_size": size,
      "global_batch_size": args.batch_size, "num_downs": num_downs,
      "mode": "inference" if args.inference else "train_step",
      "threads": args.threads, "step_time_s": median,
      "step_time_min_s": min(times), "step_time_max_s": max(times),
      "step_cpu_time_s": cpu, "images_per_s": args.batch_size / median,
      "timed_steps": args.steps, "load_average_before": round(load_before, 2),
      "load_average_after": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
  main()
