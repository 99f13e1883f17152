"""The Dagster code location: five stage assets, their checks, the sensor, the jobs and the
Definitions (``hasher_assets.definitions``). May import core and resources."""
