"""What a reviewer sees, in a real browser: the MLflow UI over a store made by real
retrains and a classify, and the classify run's ``report.html``.

Headless Debian Chromium (``/usr/bin/chromium``, installed by ``make browser``) is
driven by Python playwright; playwright's own browser download is never used. The test
starts ``mlflow server`` itself with lean settings (one worker, no job runner) on a free
port and stops it at the end.

Screenshots go to the test's temporary folder; with ``ALERTCLF_UPDATE_SCREENSHOTS=1``
they are also copied to ``docs/screenshots/`` (the README shows them).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow_server import MlflowServer

from alertclf import tracking
from alertclf.flows import FAULT_ENV, classify, retrain
from alertclf.report import REPORT_FILE
from alertclf.settings import Settings
from alertclf.simulate import SimulationConfig, simulate, write_simulation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "docs" / "screenshots"
UPDATE_ENV = "ALERTCLF_UPDATE_SCREENSHOTS"
MODEL = "alert-clustering"
# Offline machine: no component updates, no background calls home, no first-run dialogs.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
UI_TIMEOUT_MS = 60_000  # the MLflow UI is a React app: the first render can be slow
FAST = {"algorithm": "kmeans", "kmeans_k_min": 4, "kmeans_k_max": 9}

if not CHROMIUM.exists():  # pragma: no cover - `make test` installs it first
    pytest.skip(
        f"{CHROMIUM} is missing: run `make browser` (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api")


# --- the store: two retrains (v1 production, v2 staging) and one classify ------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("review")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", FAULT_ENV):
            mp.delenv(name, raising=False)
        tracking._SET_BY_US.clear()
        files = write_simulation(
            simulate(SimulationConfig(seed=11, days=1.5, scenario="mixed")), base / "data"
        )
        settings = Settings(**FAST)
        models = base / "models"
        first = retrain(settings, files["alerts"], files["graph"], models)
        second = retrain(settings, files["alerts"], files["graph"], models)
        assert first.promoted and not second.promoted, second.reason
        outcome = classify(settings, files["alerts"], files["graph"], base / "results", models)
        import mlflow

        experiment_id = mlflow.get_run(second.mlflow_run_id).info.experiment_id
        tracking._SET_BY_US.clear()
    return {
        "models": models,
        "results": outcome.results_dir,
        "incidents": outcome.incidents,
        "retrain_run": second.mlflow_run_id,
        "experiment_id": experiment_id,
    }


@pytest.fixture(scope="module")
def server(store, tmp_path_factory) -> Iterator[str]:
    """``mlflow server`` over the store, lean: one worker, no job runner."""
    log_path = tmp_path_factory.mktemp("server") / "mlflow-server.log"
    running = MlflowServer(store["models"], log_path)
    try:
        yield running.url
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


def _screenshot(page, shots: Path, name: str, **options) -> Path:
    path = shots / name
    page.screenshot(path=str(path), **options)
    assert path.stat().st_size > 10_000, f"{name} looks empty"
    _publish(path)
    return path


def _publish(path: Path) -> None:
    """With ALERTCLF_UPDATE_SCREENSHOTS=1, copy into docs/screenshots/ as a 256-colour
    PNG: a quarter of the size, and UI text and chart colours survive."""
    if os.environ.get(UPDATE_ENV) != "1":
        return
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        palette = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
        palette.save(SCREENSHOTS / path.name, optimize=True)


def _close_assistant(page) -> None:
    """MLflow 3 opens an assistant side panel; close it so the page is readable."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        with contextlib.suppress(sync_api.Error):
            close.first.click(timeout=5_000)


# --- the tests ---------------------------------------------------------------------
def test_registry_page_lists_versions_with_staging_and_production_aliases(server, page, shots):
    page.goto(f"{server}/#/models/{MODEL}")
    for version in ("Version 1", "Version 2"):
        page.get_by_text(version, exact=True).wait_for()
    production = page.get_by_text(re.compile(r"^@\s*production$"))
    staging = page.get_by_text(re.compile(r"^@\s*staging$"))
    production.first.wait_for()
    staging.first.wait_for()
    assert production.count() == 1 and staging.count() == 1
    # Each alias sits on the right version's row.
    row_v1 = page.get_by_role("row").filter(has_text="Version 1")
    row_v2 = page.get_by_role("row").filter(has_text="Version 2")
    if row_v1.count() and row_v2.count():
        assert re.search(r"@\s*production", row_v1.first.inner_text())
        assert re.search(r"@\s*staging", row_v2.first.inner_text())
    page.get_by_text("decision.outcome").first.wait_for()
    _close_assistant(page)
    _screenshot(page, shots, "registry-versions.png")


def test_version_page_shows_the_decision_tags(server, page, shots):
    page.goto(f"{server}/#/models/{MODEL}/versions/2")
    page.get_by_text("Source Run").wait_for()
    _close_assistant(page)
    for key in ("decision.outcome", "decision.reason"):
        tag = page.get_by_text(key, exact=True)
        tag.wait_for(state="attached")
        # The tags table scrolls inside its own box: bring the row into view.
        tag.scroll_into_view_if_needed()
        assert tag.is_visible(), key
    page.get_by_text("staged", exact=True).first.wait_for()
    reason = page.get_by_text(re.compile(r"not better enough"))
    assert reason.first.is_visible()
    _screenshot(page, shots, "version-decision.png")


def test_retrain_run_page_shows_the_plots(server, store, page, shots):
    base = f"{server}/#/experiments/{store['experiment_id']}/runs/{store['retrain_run']}/artifacts"
    page.goto(f"{base}/plots/projection_2d.png")
    for name in (
        "cluster_sizes.png",
        "projection_2d.png",
        "silhouette_per_cluster.png",
        "promotion_comparison.png",
    ):
        page.get_by_text(name, exact=True).first.wait_for()
    image = page.locator("img[src^='blob:'], img[src*='get-artifact']").first
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    assert image.evaluate("img => img.naturalWidth") >= 400
    _close_assistant(page)
    _screenshot(page, shots, "retrain-plots.png")
    previous = image.get_attribute("src")
    page.get_by_text("promotion_comparison.png", exact=True).first.click()
    page.get_by_text("plots/promotion_comparison.png").first.wait_for()
    # A new image (another blob URL), fully decoded: not the previous one, not a skeleton.
    page.wait_for_function(
        "previous => [...document.images].some(i => i.src && i.src !== previous"
        " && i.complete && i.naturalWidth > 300)",
        arg=previous,
    )
    _screenshot(page, shots, "retrain-promotion.png")


def test_report_renders_its_charts_offline(store, page, shots):
    report = store["results"] / REPORT_FILE
    assert report.exists()
    outside: list[str] = []

    def refuse_network(route) -> None:
        # Self-contained means nothing but the file itself (and its data: URIs) loads.
        url = route.request.url
        if url.startswith(("file://", "data:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", refuse_network)
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    images = page.locator("#charts img")
    assert images.count() == 3
    widths = images.evaluate_all("imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert all(w > 0 for w in widths), widths
    top = store["incidents"].sort_values("rank").iloc[0]
    row = page.locator("#incidents tr[data-rank='1']")
    assert row.is_visible()
    assert str(top["root_cause_service"]) in row.inner_text()
    links = page.locator("#files a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert "incident_groups.csv" in links
    assert all((store["results"] / href).exists() for href in links)
    assert outside == []
    _screenshot(page, shots, "report.png")
    page.locator("#chart-incident_timeline").scroll_into_view_if_needed()
    timeline = shots / "report-timeline.png"
    page.locator("#chart-incident_timeline").screenshot(path=str(timeline))
    _publish(timeline)
