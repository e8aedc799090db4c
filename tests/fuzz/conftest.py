"""Seeded hypothesis profiles of the fuzz suite: the default run is derandomized (same cases every run)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dste-fuzz",
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile("dste-fuzz")
