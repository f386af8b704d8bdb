"""The explorer in a real browser: `neuronmap http` started as a process on a free port, its pages opened in
headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; no browser download). Each page renders its
plots with no console error, hovering and clicking a module shows its details, and the compare page's ARI is the
CLI's. A screenshot of every page goes to the test's temp folder (and to NEURONMAP_EXPLORER_SHOTS, when set: that is
how docs/img/ is made)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from playwright.sync_api import Page, sync_playwright

from neuronmap.loaders.ingest.weights import ingest
from neuronmap.service.cli import cli
from neuronmap.service.runs import ClusterConfig, run_clustering
from neuronmap.service.store.local_neo4j import free_port
from tests.service.test_pipeline import planted_graph

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def env(connection) -> dict[str, str]:
    return {
        **os.environ,
        "NEO4J_URI": connection.uri,
        "NEO4J_USERNAME": connection.user,
        "NEO4J_PASSWORD": connection.password.get_secret_value(),
    }


@pytest.fixture(scope="module")
def explored(store) -> Iterator[tuple[str, str, str]]:
    """A planted 4-module net, clustered twice (k=4 with a null of 10 shuffles, then k=6)."""
    model = f"test-explorer-{os.getpid()}"
    graph, _ = planted_graph(sizes=(24, 32, 32, 16), k=4, seed=3)
    ingest(store, model, graph)
    try:
        first = run_clustering(store, model, ClusterConfig(n_clusters=4, n_shuffles=10, random_state=0))
        second = run_clustering(store, model, ClusterConfig(n_clusters=6, random_state=1))
        yield model, first.id, second.id
    finally:
        store.run("admin.delete_model", model=model)


@pytest.fixture(scope="module")
def server(env, explored, tmp_path_factory) -> Iterator[str]:
    port = free_port()
    command = [str(Path(sys.executable).with_name("neuronmap")), "http", "--port", str(port)]
    log = tmp_path_factory.mktemp("http") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/api/models", timeout=2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"neuronmap http did not start: {log.read_text()}") from None
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
    said = log.read_text()
    assert "Traceback" not in said and f"http://127.0.0.1:{port}/" in said and "needs no token" in said


@pytest.fixture(scope="module")
def browser_page(server) -> Iterator[tuple[Page, list[str]]]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install -y chromium (./dev.sh test does it)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page, errors
        browser.close()


def visit(page: Page, errors: list[str], url: str, shot: Path, plots: int) -> None:
    """Open a page, wait for its plots, check the console stayed clean, and save a screenshot."""
    page.goto(url)
    if plots:
        page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {plots}")
    assert errors == [], errors
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if target := os.environ.get("NEURONMAP_EXPLORER_SHOTS"):
        shutil.copy(shot, Path(target) / shot.name)


def test_model_page_diagram_hover_and_click(browser_page, server, explored, tmp_path):
    page, errors = browser_page
    model, first, _ = explored
    visit(page, errors, f"{server}/", tmp_path / "explorer-store.png", 0)
    assert model in page.inner_text("#models") and page.locator("#compare-models tbody tr").count() >= 1
    visit(page, errors, f"{server}/models/{model}?partition={first}", tmp_path / "explorer-model.png", 1)
    assert page.locator("#diagram .xtick").count() == 4  # one column per layer, labelled
    assert page.locator("#diagram .legendtext").count() == 4  # one legend entry per module
    bars = page.locator("#diagram .barlayer .point path")
    assert bars.count() >= 4
    box = max((bars.nth(i).bounding_box() for i in range(bars.count())), key=lambda b: b["height"])
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#diagram .hoverlayer .hovertext")
    hover = page.text_content("#diagram .hoverlayer")
    assert re.search(r"module \d", hover) and "cohesion" in hover and "n-cut term" in hover
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#details table.core")
    details = page.inner_text("#details")
    assert "members" in details and "core neurons" in details and "fc1" in details
    page.screenshot(path=str(tmp_path / "explorer-model-clicked.png"), full_page=True)
    assert errors == [], errors


def test_partition_page_renders_its_plots(browser_page, server, explored, tmp_path):
    page, errors = browser_page
    _, first, _ = explored
    visit(page, errors, f"{server}/partitions/{first}", tmp_path / "explorer-partition.png", 3)
    assert "10 shuffled networks" in page.inner_text("#verdict")
    for plot in ("null", "span", "adjacency"):
        assert page.locator(f"#{plot} .main-svg").count() >= 1, plot
    assert page.locator("#span .hm, #span image").count() >= 1  # the heatmap drew


def test_compare_page_shows_the_clis_ari(browser_page, server, explored, env, tmp_path):
    page, errors = browser_page
    model, first, second = explored
    cli_run = CliRunner().invoke(
        cli,
        ["query", "compare-partitions", "--model", model, "--a", first, "--b", second],
        env=env,
        catch_exceptions=False,
    )
    cli_ari = re.search(r"ARI (-?[0-9.]+)", cli_run.output).group(1)
    visit(page, errors, f"{server}/compare?model={model}&a={first}&b={second}", tmp_path / "explorer-compare.png", 3)
    assert page.inner_text("#ari") == cli_ari
    assert page.locator("#contingency .main-svg").count() >= 1


def test_queries_and_jobs_pages(browser_page, server, explored, tmp_path):
    page, errors = browser_page
    model, first, _ = explored
    visit(page, errors, f"{server}/queries", tmp_path / "explorer-queries.png", 0)
    page.click("text=module-span")
    page.fill("input[name=model]", model)
    page.click("#query-form button")
    page.wait_for_selector("#rows tbody tr")
    assert page.locator("#rows tbody tr").count() == 6  # latest: the k=6 partition
    assert page.get_attribute("#csv", "href").endswith("format=csv")
    page.screenshot(path=str(tmp_path / "explorer-query.png"), full_page=True)
    visit(page, errors, f"{server}/jobs", tmp_path / "explorer-jobs.png", 0)
    page.wait_for_function("document.getElementById('jobs-updated').innerText !== 'now'", timeout=10_000)
    assert errors == [], errors


def test_the_static_export_opens_offline(browser_page, store, explored, tmp_path):
    from neuronmap.service.http.export import export_partition_page

    page, errors = browser_page
    model, first, _ = explored
    path = export_partition_page(store, model, first, tmp_path / "partition.html")
    page.goto("about:blank")  # the jobs page's polling ends before requests are counted
    requests: list[str] = []
    record = lambda request: requests.append(request.url)
    page.on("request", record)
    visit(page, errors, path.as_uri(), tmp_path / "explorer-static.png", 3)
    page.remove_listener("request", record)
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []  # nothing fetched
    assert "10 shuffled networks" in page.inner_text("#verdict")


def test_an_assessed_partition_shows_importance_and_coherence(browser_page, server, store, tmp_path):
    """An MLP on digits (untrained: the plots need scores, not modularity), assessed by lesions and by data-set
    examples: the partition page adds the importance points, the per-class lesion heatmap and the top inputs as
    images."""
    import torch

    import neuronmap as nm
    from neuronmap.service.runs import run_coherence, run_importance

    page, errors = browser_page
    model = f"test-explorer-assessed-{os.getpid()}"
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    nm.ingest(store, model, nm.graph_from_module(net, input_shape=(64,)))
    try:
        partition = run_clustering(store, model, ClusterConfig(n_clusters=2, random_state=0)).id
        run_importance(store, model, partition, module=net, n_null=10, device="cpu")
        run_coherence(store, model, partition, module=net, n_null=10, k=8, methods=("examples",), device="cpu")
        visit(page, errors, f"{server}/partitions/{partition}", tmp_path / "explorer-assessed.png", 6)
        for plot in ("importance", "lesions", "examples"):
            assert page.locator(f"#{plot} .main-svg").count() >= 1, plot
        assert "coherence examples" in page.inner_text("main")
    finally:
        store.run("admin.delete_model", model=model)
