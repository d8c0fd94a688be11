"""Training systems (Lightning modules and data modules): glue around the models in ``locscope.models``."""
