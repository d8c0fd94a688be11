"""Small helpers shared across locscope: atomic writes, devices, seeding, progress bars."""
