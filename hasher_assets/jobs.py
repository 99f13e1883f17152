"""The two jobs: stages 1–4 of one partition, and the deployment over every partition."""

import dagster as dg

from hasher_core.names import PARTITION_STAGES

#: Stages 1–4 of one partition; deployment gathers all partitions and is launched on its own.
partition_pipeline_job = dg.define_asset_job(
    "partition_pipeline",
    selection=dg.AssetSelection.assets(*PARTITION_STAGES),
    description="knowledge_base → training_frames → seeds → checkpoints for one source file",
)
deployment_job = dg.define_asset_job(
    "deploy",
    selection=dg.AssetSelection.assets("deployment"),
    description="Bundle every partition's checkpoints and flash them to the target",
)
