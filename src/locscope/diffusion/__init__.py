"""Diffusion machinery shared by the generative models.

- :mod:`locscope.diffusion.schedule`: the shifted-cosine noise schedule (simple diffusion, Hoogeboom et al. 2023) on
  T discrete steps, noising and the v-prediction parameterisation;
- :mod:`locscope.diffusion.samplers`: DDIM and DPM-Solver++ (diffusers schedulers driven by that schedule) with
  classifier-free guidance;
- :mod:`locscope.diffusion.masked`: order-agnostic masked (absorbing-state) diffusion over protein sequences.
"""
