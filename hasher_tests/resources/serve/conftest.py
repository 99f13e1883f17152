"""Two real deployments trained at 17 bits (seconds each for these short texts): the server's
mechanics need real bundles (a recipe, seeds that verify on the kernel) whose answers are tokens —
a seed below 17 bits answers none (DESIGN §6.1)."""

from __future__ import annotations

import pytest

from hasher_core.bundle import Bundle
from hasher_resources.deploy.store import DeploymentStore
from hasher_tests.serving import DICKENS, ZEN, train_deployment


@pytest.fixture(scope="package")
def trained_bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, Bundle]:
    """``(Dickens, Zen)``: two bundles, each trained and deployed at 17 bits through the pipeline."""
    root = tmp_path_factory.mktemp("serve-bundles")
    dickens = train_deployment(root / "dickens", DICKENS, 17, "dickens.txt")
    zen = train_deployment(root / "zen", ZEN, 17, "zen.txt")
    return DeploymentStore(dickens).open_bundle(), DeploymentStore(zen).open_bundle()
