"""The report page in a real browser: headless Chromium (Debian's `chromium`, installed by
scripts/setup.sh where it can be; these tests skip without it) loads it without any error, draws
N images of K slots, and dropping a slot recombines the image in the page exactly as Python does
from the same dequantised data.

The page is driven by its test hook (a URL hash that clicks slots and probes pixels; see
report.js) and read back with `--dump-dom`; any network access is refused (`--host-resolver-rules`
maps every host to nowhere, and a failed load would be recorded as a page error)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slotlab.report import recombine, unpack
from slotlab.report.build import to_byte
from tests.report.conftest import ITERATIONS, NUM_IMAGES
from tests.report.helpers import page_data, read_results

CHROMIUM = shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if Path(p).exists()), None)

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh "
                       "installs it where apt-get can)"),
    pytest.mark.timeout(600),
]

K = 4


def chromium(tmp_path: Path, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    """Headless Chromium with a fresh profile, no network and no background services."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=20000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def dump_dom(tmp_path: Path, page: Path, hash_: str = "") -> str:
    url = page.resolve().as_uri() + (f"#{hash_}" if hash_ else "")
    return chromium(tmp_path, "--dump-dom", url).stdout


def page_errors(dom: str) -> list[str]:
    found = re.search(r'<html[^>]*\bdata-errors="([^"]*)"', dom)
    assert found, "the page's error capture did not run"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def brightest_pixel(mask: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(int(mask.argmax()), mask.shape)
    return int(y), int(x)


def test_dropping_a_slot_recombines_in_the_page(od_report, tmp_path):
    data = page_data(od_report.read_text())
    t_index = ITERATIONS.index(3)
    drops = {0: [1], 1: [0, 2]}
    # probe where each dropped slot's mask is largest (the drop changes those pixels most),
    # and two corners
    probes = []
    for i, dropped in drops.items():
        logits = unpack(data["images"][i]["per_t"][t_index]["logits"])
        for k in dropped:
            probes.append((i, *brightest_pixel(logits[k] - logits.max(axis=0))))
        probes += [(i, 0, 0), (i, 31, 17)]
    hash_ = ("test-iterations=3&test-drop=" + ",".join(f"{i}:{k}" for i, ks in drops.items()
                                                      for k in ks)
             + "&test-probe=" + ";".join(f"{i}:{y}:{x}" for i, y, x in probes))
    dom = dump_dom(tmp_path, od_report, hash_)
    assert page_errors(dom) == []
    results = read_results(dom)
    assert results["errors"] == []
    assert results["images"] == NUM_IMAGES
    assert results["slots"] == [K] * NUM_IMAGES
    assert results["attention"] == [3] * NUM_IMAGES  # one map per iteration
    assert results["iterations"] == 3
    assert results["kept"] == [[k for k in range(K) if k not in drops.get(i, [])]
                               for i in range(NUM_IMAGES)]
    assert len(results["probes"]) == len(probes)
    changed = 0
    for probe, (i, y, x) in zip(results["probes"], probes):
        assert (probe["image"], probe["y"], probe["x"]) == (i, y, x)
        entry = data["images"][i]["per_t"][t_index]
        rgb, logits = unpack(entry["rgb"]), unpack(entry["logits"])
        kept = results["kept"][i]
        expected = recombine(rgb, logits, kept)[:, y, x]
        np.testing.assert_allclose(probe["value"], expected, rtol=0, atol=1e-9)
        assert probe["pixel"] == to_byte(expected).astype(int).tolist()  # what the canvas shows
        before = recombine(rgb, logits, list(range(K)))[:, y, x]
        changed += bool(np.abs(before - expected).max() > 1e-6)
    assert changed >= len(drops)  # the drops changed the probed pixels


def test_video_frames_and_dropped_slots(video_report, tmp_path):
    data = page_data(video_report.read_text())
    k, frame = data["num_slots"], 2
    probes = [(0, 3, 4), (0, 20, 30), (1, 10, 10)]
    dom = dump_dom(tmp_path, video_report, f"test-frame={frame}&test-drop=0:1,0:3&test-probe="
                   + ";".join(f"{i}:{y}:{x}" for i, y, x in probes))
    assert page_errors(dom) == []
    results = read_results(dom)
    assert results["errors"] == [] and results["frame"] == frame
    assert results["images"] == 2 and results["slots"] == [k, k]
    assert results["kept"][0] == [j for j in range(k) if j not in (1, 3)]
    for probe, (i, y, x) in zip(results["probes"], probes):
        entry = data["images"][i]["per_t"][0]
        rgb, logits = unpack(entry["rgb"])[frame], unpack(entry["logits"])[frame]
        expected = recombine(rgb, logits, results["kept"][i])[:, y, x]
        np.testing.assert_allclose(probe["value"], expected, rtol=0, atol=1e-9)
        assert probe["pixel"] == to_byte(expected).astype(int).tolist()
    assert 'id="frame-slider"' in dom and 'id="frame-play"' in dom


def test_set_prediction_page_loads(sp_report, tmp_path):
    dom = dump_dom(tmp_path, sp_report, "test=1")
    assert page_errors(dom) == []
    results = read_results(dom)
    assert results["errors"] == []
    assert results["images"] == NUM_IMAGES and results["slots"] == [K] * NUM_IMAGES
    assert results["iterations"] == 3 and results["attention"] == [3] * NUM_IMAGES
    rows = re.findall(r'<tr class="slot[^"]*" data-slot="\d+">(.*?)</tr>', dom, re.S)
    assert len(rows) == K * NUM_IMAGES
    assert all(re.search(r"<td>\d\.\d{3}</td>", row) for row in rows)  # objectness drawn


def test_page_without_test_hook_and_screenshot(od_report, tmp_path):
    dom = dump_dom(tmp_path, od_report)
    assert page_errors(dom) == []
    assert 'data-ready="1"' in dom
    assert len(re.findall(r'<article class="image-card"', dom)) == NUM_IMAGES
    assert len(re.findall(r'<figure class="view slot[^"]*"', dom)) == NUM_IMAGES * K
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1400", "--hide-scrollbars",
             od_report.resolve().as_uri())
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (1400, 1200, 3)
    assert image.std() > 10  # drawn, not a blank page
