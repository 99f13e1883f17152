"""The Dagster UI in a real browser: what a user sees and does under ``dagster dev``.

``dagster dev`` (webserver + daemon) serves a temporary instance whose inbox holds one short
text; Debian's Chromium (``/usr/bin/chromium``, driven through ``/usr/bin/chromedriver`` by
Selenium, which never downloads a browser here) then: opens the global asset lineage and finds
the five assets in their three groups; opens ``seeds`` → Partitions and finds the registered
partition; launches ``partition_pipeline`` for that partition from the Materialize dialog (partition
picker, config typed into the editor, Launch); watches the run page until the run succeeds; finds
every asset check passed; and opens the seeds' ``plot`` metadata, a rendered PNG. Every step
leaves a screenshot in the directory the test prints; a failing step leaves one named ``FAILED``
and says what it did not find.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webelement import WebElement

from hasher_assets.partitions import register_partitions
from hasher_resources.storage import HasherStorage
from hasher_tests.servers import (
    dagster_dev_argv,
    dagster_env,
    dagster_home,
    free_port,
    log_tail,
    running,
    stop_server,
    wait_for,
    wait_for_location,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
KEY = "address.txt"
TEXT = "Four score and seven years ago our fathers brought forth on this continent a new nation."
GROUPS = {
    "deploy": ["deployment"],
    "ingest": ["knowledge_base", "training_frames"],
    "train": ["checkpoints", "seeds"],
}
CHECKS = {
    "knowledge_base": "knowledge_base_is_well_formed",
    "training_frames": "training_frames_are_consistent",
    "checkpoints": "checkpoints_gate",
}
DIFFICULTY_BITS = 8  # typed into the launch dialog's config editor: the run takes seconds
UI_WAIT_S = 60.0
RUN_WAIT_S = 300.0


def _no_selenium_manager(*args, **kwargs):
    raise AssertionError("Selenium Manager was asked for a browser or driver: it must use the system ones")


@contextlib.contextmanager
def _chromium(monkeypatch, log: Path) -> Iterator[webdriver.Chrome]:
    """Headless system Chromium through the system chromedriver (its own process group)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, (
        f"missing {missing}: run scripts/system_deps.sh (apt-get install chromium chromium-driver)"
    )
    monkeypatch.setattr(SeleniumManager, "binary_paths", _no_selenium_manager)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1800,1100"):
        options.add_argument(argument)
    service = Service(str(CHROMEDRIVER), log_output=str(log), popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        with contextlib.suppress(WebDriverException):
            driver.quit()
        if service.process is not None:
            stop_server(service.process, grace_s=10)  # chromedriver and any browser it left behind


class UserSession:
    """A browser on the webserver at ``base_url``: numbered steps, each with a screenshot."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, shots: Path) -> None:
        self.driver, self.base_url, self.shots, self.count = driver, base_url, shots, 0

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run one step; screenshot ``NN-name.png`` after it, or ``NN-name-FAILED.png`` and a named error."""
        self.count += 1
        stem = f"{self.count:02d}-{name}"
        try:
            yield
        except Exception as exc:
            self.driver.save_screenshot(str(self.shots / f"{stem}-FAILED.png"))
            reason = exc.msg if isinstance(exc, WebDriverException) else exc  # not the driver's stack trace
            raise AssertionError(f"step {stem!r} failed ({self.shots / stem}-FAILED.png): {reason}") from exc
        self.driver.save_screenshot(str(self.shots / f"{stem}.png"))

    def open(self, path: str) -> None:
        """Go to ``path`` on the webserver, as typing the address would."""
        self.driver.get(self.base_url + path)

    def find(
        self, xpath: str, what: str, root: WebElement | None = None, timeout_s: float = UI_WAIT_S
    ) -> WebElement:
        """The first displayed element at ``xpath`` (under ``root``), waited for; fails naming ``what``."""

        def displayed() -> WebElement | None:
            found = (root or self.driver).find_elements(By.XPATH, xpath)
            return next((e for e in found if e.is_displayed()), None)

        return wait_for(displayed, timeout_s, what, interval_s=0.5)

    def button(self, label: str, root: WebElement | None = None) -> WebElement:
        """The displayed button whose text starts with ``label``."""
        return self.find(
            f".//button[starts-with(normalize-space(.), {label!r})]", f"a {label!r} button", root
        )

    def text(
        self, text: str, what: str, root: WebElement | None = None, timeout_s: float = UI_WAIT_S
    ) -> WebElement:
        """The displayed element whose own text is ``text``."""
        return self.find(f".//*[normalize-space(text())={text!r}]", what, root, timeout_s)

    def body(self) -> str:
        """The text the page shows now."""
        return self.driver.find_element(By.TAG_NAME, "body").text

    def click(self, element: WebElement) -> None:
        """Scroll ``element`` into view and click it like a mouse would."""
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()


def _expand_all(user: UserSession, xpath: str, what: str) -> None:
    """Click the first element at ``xpath`` until none is left (each click re-renders the others)."""
    for _ in range(2 * len(GROUPS)):
        found = user.driver.find_elements(By.XPATH, xpath)
        if not found:
            return
        user.driver.execute_script("arguments[0].click()", found[0])
        before = len(found)
        wait_for(lambda: len(user.driver.find_elements(By.XPATH, xpath)) < before, 10, what)  # noqa: B023
    raise AssertionError(f"{what}: still collapsed after {2 * len(GROUPS)} clicks")


def _sidebar_groups(user: UserSession) -> dict[str, list[str]]:
    """The lineage's sidebar tree, every group expanded: group → its assets (sorted)."""
    collapsed = (
        "//*[@aria-label='arrow_drop_down' and contains(@style, 'rotate(-90deg)')]/ancestor::button[1]"
    )
    _expand_all(user, collapsed, "a sidebar group to expand")

    def read() -> dict[str, list[str]]:  # a re-render makes rows stale: wait_for reads again
        groups: dict[str, list[str]] = {}
        current = None
        for row in user.driver.find_elements(By.CSS_SELECTOR, "[data-index]"):
            if row.find_elements(By.CSS_SELECTOR, "[aria-label='asset_group']"):
                current = row.text.strip()
                groups[current] = []
            elif current is not None and row.text.strip():
                groups[current].append(row.text.strip())
        return {group: sorted(assets) for group, assets in groups.items()}

    return wait_for(read, 10, "the sidebar's groups", interval_s=0.5)


def test_a_user_launches_a_partition_from_the_ui_and_sees_it_succeed_with_checks_and_plot(
    tmp_path, monkeypatch
):
    inbox, miner = tmp_path / "inbox", tmp_path / "miner"
    inbox.mkdir()
    miner.mkdir()
    (inbox / KEY).write_text(TEXT)
    home = dagster_home(tmp_path / "dagster_home")
    data = tmp_path / "data"
    with dg.DagsterInstance.from_config(str(home)) as instance:  # what `hasher partitions sync` does
        register_partitions(
            instance, HasherStorage(miner_dir=str(miner), inbox_dir=str(inbox), data_dir=str(data))
        )
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    port, log = free_port(), tmp_path / "dagster_dev.log"
    env = dagster_env(home, data, miner, inbox)
    with (
        running(dagster_dev_argv(port), env=env, log=log),
        _chromium(monkeypatch, tmp_path / "chromedriver.log") as driver,
    ):
        wait_for_location(port)
        user = UserSession(driver, f"http://127.0.0.1:{port}", shots)
        try:
            _walk_through(user)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ndagster dev log ({log}) ends:\n{log_tail(log, 2000)}") from exc


def _walk_through(user: UserSession) -> None:
    with user.step("lineage-groups"):
        user.open("/asset-groups")
        user.text("ingest", "the ingest group in the lineage")
        assert _sidebar_groups(user) == GROUPS, "the lineage's groups and their assets"
        _expand_all(user, "//*[@aria-label='unfold_more']", "a group in the graph to expand")
        user.driver.refresh()  # the graph zooms to fit what is expanded (the UI remembers it) on load
        for asset in (a for assets in GROUPS.values() for a in assets):
            user.find(
                f"//*[normalize-space(text())={asset!r} and not(ancestor::*[@data-index])]",
                f"{asset} in the graph",
            )

    with user.step("seeds-partitions"):
        user.open("/assets/seeds?view=partitions")
        user.text(KEY, f"the registered partition {KEY} on the seeds Partitions tab")
        user.find("//*[starts-with(normalize-space(text()), 'Missing (1)')]", "Missing (1) before any run")

    with user.step("launch-dialog"):
        user.open("/locations/hasher/jobs/partition_pipeline")
        user.click(user.button("Materialize all"))
        dialog = user.find("//*[@role='dialog']", "the launch dialog")
        user.text("Launch runs to materialize 4 assets", "the dialog's title", dialog)
        user.click(user.find(".//*[contains(@class, 'TagSelector')]", "the partition picker", dialog))
        menu = user.find("//ul[@role='menu']", "the partition picker's list")
        user.click(user.text(KEY, f"{KEY} in the partition picker", menu))
        ActionChains(user.driver).send_keys(Keys.ESCAPE).perform()
        user.find(".//*[normalize-space(text())='1 partition']", "'1 partition' selected", dialog)
        user.click(user.text("Config", "the dialog's Config section", dialog))
        user.click(user.button("Add config", dialog))
        editor_xpath = "//*[contains(@class, 'cm-s-config-editor')]"
        editor = user.find(editor_xpath, "the config editor")
        user.click(editor)
        config = f"ops: {{seeds: {{config: {{difficulty_bits: {DIFFICULTY_BITS}}}}}}}"
        ActionChains(user.driver).send_keys(config).perform()
        typed = "return arguments[0].CodeMirror.getValue()"
        wait_for(lambda: user.driver.execute_script(typed, editor) == config, 10, f"{config!r} in the editor")
        user.find("//*[normalize-space(text())='No errors']", "the config editor's 'No errors'")

        def saved() -> bool:  # the button answers once the editor has validated what was typed
            buttons = [b for b in user.driver.find_elements(By.XPATH, save) if b.is_displayed()]
            if buttons:
                buttons[0].click()
            return not any(e.is_displayed() for e in user.driver.find_elements(By.XPATH, editor_xpath))

        save = "//button[normalize-space(.)='Save config']"
        wait_for(saved, 20, "the config editor closed by Save config", interval_s=1.0)
        user.text("Config saved", "'Config saved' in the dialog", dialog)

    with user.step("launched"):
        user.click(user.button("Launch 1 run", dialog))
        toast = user.find("//*[starts-with(normalize-space(.), 'Launched run')]", "the 'Launched run' notice")
        short_id = re.search(r"Launched run (\w+)", toast.text)
        assert short_id, f"no run id in the notice {toast.text!r}"
        user.click(user.find(f"//a[contains(@href, '/runs/{short_id.group(1)}')]", "the notice's View link"))

    with user.step("run-succeeded"):
        user.text(short_id.group(1), "the run page's header")
        user.text("Success", "the run's status Success", timeout_s=RUN_WAIT_S)
        body = user.body()
        assert f"partition: {KEY}" in body, "the run page names the partition"
        assert "Errored (0)" in body, "no errored steps"

    for asset, check in CHECKS.items():
        with user.step(f"check-{check}"):
            user.open(f"/assets/{asset}?view=checks")
            user.text(check, f"the check {check} on {asset}'s Checks tab")
            user.text("Succeeded", f"{check}: Succeeded")
            user.text("Passed", f"{check}: evaluation result Passed")

    with user.step("seeds-plot"):
        user.open("/assets/seeds?view=partitions")
        user.click(user.text(KEY, f"{KEY} in the seeds partitions list"))
        user.find(
            "//*[starts-with(normalize-space(text()), 'Materialized (1)')]", "Materialized (1) after the run"
        )
        row = user.find(
            "//tr[.//*[normalize-space(text())='difficulty_bits']]", "the difficulty_bits metadata row"
        )
        assert row.text.split()[-1] == str(DIFFICULTY_BITS), f"difficulty_bits row reads {row.text!r}"
        plot_row = user.find("//tr[.//*[normalize-space(text())='plot']]", "the plot metadata row")
        user.click(user.find(".//*[contains(text(), 'Show Markdown')]", "the plot's Show Markdown", plot_row))
        dialog = user.find("//*[@role='dialog']", "the plot dialog")
        image = user.find(".//img[@alt='search progress']", "the rendered search-progress plot", dialog)
        wait_for(
            lambda: user.driver.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth", image
            ),
            10,
            "the plot image decoded",
        )
