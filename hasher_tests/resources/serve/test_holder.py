"""Hot swap (DESIGN §6): the served model follows ``current``; a new bundle is verified before it is
served, a damaged one is refused while the old one keeps serving, and health says why."""

from __future__ import annotations

import pytest

from hasher_core.bundle import SEEDS_FILE
from hasher_resources.deploy.bundle_files import write_bundle
from hasher_resources.deploy.store import DeploymentStore
from hasher_resources.deploy.verify import SampleMismatch, VerifyReport
from hasher_resources.serve.holder import ModelHolder, ModelLoader, kernel_loader
from hasher_resources.serve.worker import InferenceWorker
from hasher_resources.sha256.resource import Sha256Kernel
from hasher_tests.serving import add_version, point_current_at

LOADER = kernel_loader(Sha256Kernel(backend="cpu"), sample_size=16)


@pytest.fixture
def worker():
    w = InferenceWorker()
    yield w
    w.close()


@pytest.fixture
def store(tmp_path, trained_bundles) -> DeploymentStore:
    """A store whose current deployment is the Dickens bundle."""
    store = DeploymentStore(tmp_path / "store")
    add_version(store, trained_bundles[0])
    return store


def holder_of(store, worker, loader=LOADER) -> tuple[ModelHolder, list]:
    events: list = []
    holder = ModelHolder(store, worker, loader, poll_s=60, on_change=lambda *e: events.append(e))
    return holder, events


def damage(store: DeploymentStore, bundle) -> None:
    """Write ``bundle``'s version directory with one byte of its seeds flipped."""
    directory = store.version_dir(bundle.version)
    write_bundle(bundle, directory)
    seeds = directory / SEEDS_FILE
    data = bytearray(seeds.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seeds.write_bytes(bytes(data))


def test_start_serves_the_current_bundle_verified_and_says_what_it_was_trained_on(
    store, worker, trained_bundles
):
    holder, events = holder_of(store, worker)
    holder.start()
    holder.stop()
    dickens = trained_bundles[0]
    serving, body = holder.health()
    assert serving and body["status"] == "ok" and body["bundle"] == body["current"] == dickens.version
    assert body["trained_on"] == [
        {"partition": "dickens.txt", "frames": dickens.num_rows, "solved": dickens.num_rows}
    ]
    assert body["difficulty_bits"] == [17] and body["verified"] == "16 sampled rows agree on kernel:cpu"
    assert events == [("loaded", dickens.version, None)] and "reason" not in body


def test_with_nothing_deployed_health_is_unavailable_and_says_why(tmp_path, worker):
    holder, _ = holder_of(DeploymentStore(tmp_path / "empty"), worker)
    assert holder.check_now() is None
    serving, body = holder.health()
    assert not serving and body["status"] == "unavailable"
    assert body["reason"].startswith(f"nothing is deployed under {tmp_path / 'empty'}")


def test_a_new_deployment_is_swapped_in_and_a_request_keeps_the_model_it_started_on(
    store, worker, trained_bundles
):
    dickens, zen = trained_bundles
    holder, events = holder_of(store, worker)
    holder.check_now()
    in_flight = holder.served  # what a request took when it started
    before = in_flight.model.generate("It was the best", 5)
    add_version(store, zen)
    assert holder.check_now() == zen.version and holder.served.version == zen.version
    assert in_flight.version == dickens.version
    assert in_flight.model.generate("It was the best", 5) == before  # the old model still answers
    assert [e[:2] for e in events] == [("loaded", dickens.version), ("loaded", zen.version)]
    add_version(store, dickens)  # a rollback is a pointer move like any other
    assert holder.check_now() == dickens.version


def test_a_damaged_new_bundle_is_refused_and_the_old_one_keeps_serving(store, worker, trained_bundles):
    dickens, zen = trained_bundles
    holder, events = holder_of(store, worker)
    holder.check_now()
    damage(store, zen)
    point_current_at(store, zen.version)
    assert holder.check_now() == dickens.version
    serving, body = holder.health()
    assert serving and body["status"] == "stale" and body["bundle"] == dickens.version
    assert body["current"] == body["refused"]["version"] == zen.version
    assert "BundleChecksumError" in body["refused"]["reason"] and SEEDS_FILE in body["refused"]["reason"]
    assert body["reason"].startswith(
        f"bundle {zen.version} (current) was refused: DeploymentDamagedError: deployment {zen.version} "
        "is damaged: BundleChecksumError"
    )
    assert body["reason"].endswith(f"; still serving {dickens.version}")
    holder.check_now()  # the same damaged files are not loaded again
    assert [e[0] for e in events] == ["loaded", "refused"]
    # repaired (the operator restores the files): tried again and served
    (store.version_dir(zen.version) / SEEDS_FILE).write_bytes(zen.files[SEEDS_FILE])
    assert holder.check_now() == zen.version and holder.health()[1]["status"] == "ok"


def test_pointing_back_at_the_served_bundle_clears_the_refusal(store, worker, trained_bundles):
    dickens, zen = trained_bundles
    holder, _ = holder_of(store, worker)
    holder.check_now()
    damage(store, zen)
    point_current_at(store, zen.version)
    holder.check_now()
    point_current_at(store, dickens.version)
    holder.check_now()
    serving, body = holder.health()
    assert serving and body["status"] == "ok" and "refused" not in body and "reason" not in body


def test_a_bundle_that_fails_its_verification_on_the_kernel_is_refused(store, worker, trained_bundles):
    def failing(model, bundle):
        LOADER.check(model, bundle)
        return VerifyReport("kernel:cpu", 16, (SampleMismatch(3, "fp", 1, 2, "golden 2, bundle says 1"),))

    holder, _ = holder_of(store, worker, ModelLoader(LOADER.build, failing))
    holder.check_now()
    serving, body = holder.health()
    assert not serving and body["status"] == "unavailable"
    assert body["refused"]["reason"].startswith(
        "ValueError: verification failed: 1 of 16 sampled rows disagree"
    )


def test_a_damaged_bundle_at_start_leaves_nothing_served_and_health_names_it(
    tmp_path, worker, trained_bundles
):
    store = DeploymentStore(tmp_path / "store")
    damage(store, trained_bundles[1])
    point_current_at(store, trained_bundles[1].version)
    holder, _ = holder_of(store, worker)
    holder.check_now()
    serving, body = holder.health()
    assert not serving and body["reason"].startswith(
        f"bundle {trained_bundles[1].version} (current) was refused"
    )


def test_a_version_directory_holding_another_bundle_is_refused(store, worker, trained_bundles):
    dickens, zen = trained_bundles
    holder, _ = holder_of(store, worker)
    holder.check_now()
    renamed = store.version_dir("0123456789abcdef")
    write_bundle(zen, renamed)  # Zen's files under another name
    point_current_at(store, renamed.name)
    assert holder.check_now() == dickens.version
    reason = holder.health()[1]["refused"]["reason"]
    assert reason == f"ValueError: {renamed} holds bundle {zen.version}, not {renamed.name}"
