"""The point-of-care app (edgecap.edge_app), driven for real: Kivy with SDL's offscreen driver, one app per
subprocess (Kivy cannot restart inside a process), a temporary KIVY_HOME and data folder.

The app sessions press the app's own buttons (file chooser Open, Generate, Cancel, the heatmap toggle,
Export, a beam size in Settings, a history row) and report what the widgets show; the tests compare that
with the runtime (Captioner.caption on the same image and bundle). Bundle: the default bundle when it is
installed, else conftest's caption_bundle (the demo model converted once per session, shared with the
runtime tests).
Fast tests of the Kivy-free parts (heatmap layout, history store, settings, messages, worker) come first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgecap.edge_app import heatmap
from edgecap.edge_app.messages import error_message, finding_rows, warning_message
from edgecap.edge_app.settings import AppSettings, active_bundle, installed_bundles
from edgecap.edge_app.store import HistoryStore
from edgecap.edge_app.worker import CaptionWorker
from edgecap.runtime.report import DEMONSTRATION_LINE, Notice, Report

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "iu_xray"
CXR = SHARED / "images" / "CXR25_IM-1024-2001.png"


def fake_report(text="The heart is normal. The lungs are clear.", grid=2, views=("frontal", "lateral"), flagged=False):
    n = grid * grid * len(views)
    att = np.full((3, n), 1e-3, np.float32)
    att[:, 3] = 1.0  # frontal, row 1, col 1 (grid 2)
    return Report(
        text=text,
        tokens=text.split(),
        attention=att,
        findings={"No Finding": "positive", "Cardiomegaly": "negative", "Edema": None},
        timings={"total_ms": 12.5, "decoder_steps": 3},
        warnings=[Notice("not_grayscale", "frontal image: a colour image")] if flagged else [],
        flagged=flagged,
        inputs={"frontal": "/x/a.png", "lateral": None},
        attention_layout={"views": list(views), "positions_per_view": grid * grid, "grid": grid},
        bundle={"path": "/b/default", "mode": "int8", "interpreter": "ai-edge-litert", "notice": "demo"},
    )


# ---- Kivy-free parts ------------------------------------------------------------------------------
def test_view_maps_follow_the_attention_layout():
    r = fake_report()
    maps = heatmap.view_maps(r.attention, r.attention_layout)
    assert set(maps) == {"frontal", "lateral"}  # lateral got 1e-3 everywhere: present, dim
    f = maps["frontal"]
    assert f.shape == (2, 2) and f[1, 1] == 1.0 and f[0, 0] < 0.01  # n = 3 -> row 1, col 1
    assert maps["lateral"].max() < 0.01  # one scale for both views
    att = r.attention.copy()
    att[:, 4:] = 0.0  # lateral masked out (one view given): no lateral map
    assert set(heatmap.view_maps(att, r.attention_layout)) == {"frontal"}
    assert heatmap.view_maps(r.attention, {**r.attention_layout, "grid": None}) == {}
    rgb = np.full((40, 60, 3), 100, np.uint8)
    over = heatmap.overlay(rgb, f)
    assert over.shape == rgb.shape and over[-1, -1, 0] > over[0, 0, 0]  # hot corner is bottom right
    assert np.array_equal(heatmap.decode_png(heatmap.encode_png(over)), over)


def test_history_store_round_trip(tmp_path):
    store = HistoryStore(tmp_path / "h.sqlite3")
    png = heatmap.encode_png(np.zeros((10, 12, 3), np.uint8))
    a = store.add(fake_report(), {"frontal": png}, png)
    b = store.add(fake_report(flagged=True), {"frontal": png, "lateral": png}, png)
    store.close()
    store = HistoryStore(tmp_path / "h.sqlite3")  # reopened: like an app restart
    items = store.list()
    assert [i.id for i in items] == [b, a] and items[0].flagged and not items[1].flagged
    saved = store.get(a)
    assert saved.report.text == fake_report().text and saved.report.attention.shape == (3, 8)
    assert set(store.get(b).images) == {"frontal", "lateral"}
    store.delete(a)
    assert store.count() == 1 and store.get(a) is None


def test_settings_survive_and_tolerate_garbage(tmp_path):
    s = AppSettings(bundle="/b", threads=1, beam=5)
    s.save(tmp_path)
    assert AppSettings.load(tmp_path) == s
    (tmp_path / "settings.json").write_text("{not json")
    assert AppSettings.load(tmp_path).beam == 3  # defaults, never a crash
    assert AppSettings(beam=99).beam == 3 and AppSettings(threads=999).threads <= 8


def test_installed_bundles_lists_readable_and_broken(tmp_path):
    bad = tmp_path / "data" / "bundles" / "broken"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{}")
    choices = installed_bundles(tmp_path / "data", extra=tmp_path / "nowhere")
    by_origin = {c.origin: c for c in choices}
    assert by_origin["command line"].error and by_origin["installed"].error
    assert active_bundle(AppSettings(), choices, str(tmp_path / "nowhere")).origin == "command line"


def test_messages_in_plain_words():
    from edgecap.runtime.bundle import BundleError
    from edgecap.runtime.preprocess import ImageError

    m = warning_message("not_grayscale", "frontal image: a colour image")
    assert m.level == "error" and "photograph" in m.title
    assert warning_message("unfinished", "x").level == "warning"
    assert error_message(ImageError("a.png: not a readable image")).title == "This file could not be read as an image."
    assert error_message(BundleError("sha256 mismatch")).code == "bundle"
    rows = finding_rows({"No Finding": "positive", "Edema": "negative", "Cardiomegaly": "uncertain", "Mass": None})
    assert rows == [("No Finding", "yes"), ("Cardiomegaly", "uncertain"), ("Edema", "absent")]


def test_worker_cancel_discards_and_keeps_order():
    """Cooperative cancel: a running job finishes on the worker and comes back marked cancelled; a queued
    job that was cancelled never runs; the next job still runs."""
    started, release = threading.Event(), threading.Event()
    calls = []

    class SlowCaptioner:
        def caption(self, frontal, lateral=None, beam=3):
            calls.append(frontal)
            started.set()
            release.wait(5)
            raise ValueError("stop here")  # -> JobResult.error, no image decoding needed

    done = []
    w = CaptionWorker(on_done=done.append, captioner_factory=lambda b, t: SlowCaptioner())
    first = w.submit("a.png", None, None, 1, 1)
    assert started.wait(5)
    second = w.submit("b.png", None, None, 1, 1)
    w.cancel(first)
    w.cancel(second)
    third = w.submit("c.png", None, None, 1, 1)
    release.set()
    deadline = time.time() + 5
    while len(done) < 2 and time.time() < deadline:
        time.sleep(0.01)
    w.shutdown()
    assert calls == ["a.png", "c.png"]  # the cancelled queued job never ran
    assert [r.job.id for r in done] == [first.id, third.id]
    assert done[0].cancelled and not done[1].cancelled and done[1].error is not None


def test_app_modules_import_without_tensorflow():
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
        "from edgecap.edge_app import heatmap, messages, settings, store, worker, boot, headless\n"
        "import edgecap.cli.edge_app\n"
        "import edgecap.runtime.captioner, edgecap.runtime.bundle, edgecap.runtime.dicom\nprint('ok')"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-2000:]


# ---- the real app, headless ----------------------------------------------------------------------
@pytest.fixture(scope="session")
def app_bundle(request) -> Path:
    """EDGECAP_APP_TEST_BUNDLE if set; else the default bundle if installed; else conftest's caption_bundle
    (the overfit demo run converted to float32, shared with the runtime tests; building it needs TensorFlow)."""
    from edgecap.runtime.captioner import default_bundle_path

    if os.environ.get("EDGECAP_APP_TEST_BUNDLE"):
        return Path(os.environ["EDGECAP_APP_TEST_BUNDLE"])
    default = default_bundle_path()
    if (default / "manifest.json").is_file():
        return default
    return request.getfixturevalue("caption_bundle")


@pytest.fixture(scope="session")
def kivy_env(tmp_path_factory) -> dict:
    pytest.importorskip("kivy")
    if not CXR.is_file():
        pytest.skip(f"sample image not found: {CXR}")
    env = dict(
        os.environ,
        KIVY_HOME=str(tmp_path_factory.mktemp("kivy_home")),
        KIVY_NO_ARGS="1",
        SDL_VIDEODRIVER="offscreen",
        KCFG_KIVY_LOG_LEVEL="warning",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.pop("DISPLAY", None)
    env.pop("KIVY_METRICS_DENSITY", None)
    return env


# One script for every app session: argv = scenario, out dir, bundle, data dir, size, [image].
DRIVER = r'''
import json, sys, time
from pathlib import Path
from edgecap.edge_app import headless
from edgecap.edge_app.boot import parse_size

scenario, out, bundle, data_dir, size = sys.argv[1:6]
image = sys.argv[6] if len(sys.argv) > 6 else None
out = Path(out)
state = {"steps": []}
frames = [0]


def ids(app, screen):
    return app.root.ids.sm.get_screen(screen).ids


def shown(app):
    """What the widgets show now (not the app's internal state)."""
    r, m = ids(app, "report"), ids(app, "main")
    return {
        "screen": app.root.ids.sm.current,
        "report_text": r.report_text.text,
        "notices": [[c.title, c.detail, c.level] for c in reversed(r.notices.children)],
        "findings": [[f.name, f.value] for f in reversed(r.findings.children)],
        "findings_visible": r.findings_card.opacity > 0,
        "actions_offered": r.report_actions.opacity > 0 and not r.report_actions.disabled,
        "time": r.report_time.text, "bundle": r.report_bundle.text,
        "error_title": m.error_card.title if m.error_card.opacity > 0 else "",
        "error_detail": m.error_card.detail if m.error_card.opacity > 0 else "",
        "generate_disabled": m.generate_button.disabled,
        "busy": app.busy, "history_count": app.screen("history").history_count,
        "history": [[d["title"], d["subtitle"], d["flagged"]] for d in app.screen("history").history_data],
        "beam": int(app.beam), "threads": int(app.threads), "landscape": app.landscape,
        "heatmap_on": r.heatmap_toggle.state == "down", "has_heatmap": app.screen("report").report_has_heatmap,
        "toast": app.toast_text,
        "demo_banner": r.demo_banner.text if r.demo_banner.height > 0 and r.demo_banner.opacity > 0 else "",
    }


def press(widget):
    widget.dispatch("on_release")


def generate(app, driver):
    from kivy.core.window import Window
    Window.bind(on_flip=lambda *a: frames.__setitem__(0, frames[0] + 1))
    # the file chooser screen, as on a desktop: open it, pick the file, press Open
    press(ids(app, "main").frontal.ids.open_button)
    yield 0.6
    chooser = ids(app, "chooser").chooser
    chooser.path = str(Path(image).parent)
    yield 0.3
    chooser.selection = [image]
    state["chooser_screen"] = app.root.ids.sm.current
    press(ids(app, "chooser").chooser_open)
    yield lambda: not app.screen("main").frontal_loading
    state["before"] = shown(app)
    f0 = frames[0]
    press(ids(app, "main").generate_button)
    state["busy_after_press"] = app.busy
    yield lambda: not app.busy
    yield 0.3
    state["frames_while_busy"] = frames[0] - f0
    state["after"] = shown(app)
    tex_on = app.screen("report").report_texture
    toggle = ids(app, "report").heatmap_toggle
    toggle.state = "normal"
    press(toggle)
    tex = app.screen("report").report_texture
    state["overlay_toggles"] = tex is not tex_on and tex is not None
    state["heatmap_off"] = shown(app)["heatmap_on"]
    toggle.state = "down"
    press(toggle)
    state["overlay_back"] = app.screen("report").report_texture is tex_on
    press(ids(app, "report").copy_button)
    from kivy.core.clipboard import Clipboard
    state["copied"] = [app.toast_text, Clipboard.paste()]
    press(ids(app, "report").export_json_button)
    press(ids(app, "report").export_text_button)
    state["toast"] = app.toast_text
    # Settings: pick beam 1 by pressing its button; it must be remembered
    app.go("settings")
    yield 0.5
    beams = ids(app, "settings").beams.children
    press(next(b for b in beams if b.text == "1"))
    state["bundle_rows"] = [[r.label, r.selected] for r in reversed(ids(app, "settings").bundles.children)]
    app.back()
    yield 0.1


def restart(app, driver):
    app.go("history")
    yield 0.8
    state["history_screen"] = shown(app)
    rows = [w for w in ids(app, "history").history_list.layout_manager.children]
    state["rows_on_screen"] = len(rows)
    press(min(rows, key=lambda w: -w.y))  # the top row: the newest report
    yield lambda: app.root.ids.sm.current == "report"
    yield 0.3
    state["reopened"] = shown(app)
    from kivy.core.window import Window
    body = ids(app, "report").report_image.parent.parent  # image panel | text column
    state["portrait_body"] = body.orientation
    Window.size = (915, 412)  # the phone turned to landscape
    yield 0.5
    state["rotated"] = [app.landscape, body.orientation]
    state["on_pause"] = app.on_pause()  # Android keeps the app (and this report) when it goes to the background


def study(app, driver):
    yield from headless.study_script(image)(app, driver)
    state["after"] = shown(app)
    app.toast_text = ""
    for button in ("copy_button", "export_json_button", "export_text_button"):  # pressed even when not offered
        press(getattr(ids(app, "report"), button))
    state["toast_after_actions"] = app.toast_text


def cancel(app, driver):
    import edgecap.runtime.captioner as c
    slow = c.Captioner.caption

    def caption(self, *a, **k):  # a slow device: 1.5 s per report
        time.sleep(1.5)
        return slow(self, *a, **k)

    c.Captioner.caption = caption
    from kivy.clock import Clock
    from kivy.core.window import Window
    ticks = [0]
    Window.bind(on_flip=lambda *a: frames.__setitem__(0, frames[0] + 1))
    Clock.schedule_interval(lambda dt: ticks.__setitem__(0, ticks[0] + 1), 1 / 30)
    app.choose_file(image, "frontal")
    yield lambda: not app.screen("main").frontal_loading
    f0, t0 = frames[0], ticks[0]
    press(ids(app, "main").generate_button)
    yield 1.0
    state["running"] = shown(app)
    state["frames_while_running"], state["ticks_while_running"] = frames[0] - f0, ticks[0] - t0
    press(ids(app, "main").cancel_button)
    state["cancelled"] = shown(app)
    t0 = ticks[0]
    yield 2.0  # the cancelled job ends on the worker; its result must be discarded
    state["ticks_after_cancel"] = ticks[0] - t0
    state["later"] = shown(app)
    press(ids(app, "main").generate_button)  # the worker still serves the next job
    yield lambda: not app.busy
    state["second"] = shown(app)


SCENARIOS = {"generate": generate, "restart": restart, "study": study, "cancel": cancel}
code = headless.run(SCENARIOS[scenario], out / f"{scenario}.png", parse_size(size), bundle, data_dir, timeout=60)
(out / "state.json").write_text(json.dumps(state, indent=1))
sys.exit(code)
'''


def run_app(env, tmp_path, scenario, bundle, data_dir, image=None, size="412x915"):
    out = tmp_path / f"out_{scenario}_{int(time.time() * 1000)}"
    out.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, str(driver), scenario, str(out), str(bundle), str(data_dir), size]
    if image is not None:
        cmd.append(str(image))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    state = json.loads((out / "state.json").read_text()) if (out / "state.json").is_file() else {}
    return p, state, out


def caption(bundle, image, threads, beam=3):
    from edgecap.runtime.captioner import Captioner

    return Captioner.from_bundle(bundle, num_threads=threads).caption(str(image), beam=beam)


@pytest.fixture(scope="module")
def first_session(kivy_env, app_bundle, tmp_path_factory):
    """One app session on a fresh data folder: open CXR25 through the file chooser, generate, toggle the
    heatmap, export, set beam 1 in Settings."""
    tmp = tmp_path_factory.mktemp("app1")
    data = tmp / "data"
    p, state, out = run_app(kivy_env, tmp, "generate", app_bundle, data, CXR)
    assert p.returncode == 0, p.stderr[-4000:]
    return state, data, out


@pytest.mark.slow
def test_generated_report_is_the_runtime_report(first_session, app_bundle):
    state, data, out = first_session
    after = state["after"]
    expected = caption(app_bundle, CXR, after["threads"])
    assert state["chooser_screen"] == "chooser" and state["busy_after_press"]
    assert after["screen"] == "report"
    assert after["report_text"] == expected.text and expected.text  # what the screen shows IS the report
    assert after["findings"] == [list(r) for r in finding_rows(expected.findings)]
    assert not expected.flagged and after["findings_visible"]
    assert after["time"].startswith("Written in ") and Path(app_bundle).name in after["bundle"]
    assert after["has_heatmap"] and after["heatmap_on"] and state["overlay_toggles"] and state["overlay_back"]
    assert not state["heatmap_off"]
    assert state["frames_while_busy"] >= 1  # the window kept drawing while the worker ran
    assert after["history_count"] == 1
    assert state["copied"][0] == "Report copied." and state["copied"][1].startswith(expected.text)
    # issue 16 item 11: a demonstration bundle gets a banner at the top of the report screen, and says so in
    # what is copied; the small grey notice under the text was easy to miss
    assert expected.demonstration and after["demo_banner"] == DEMONSTRATION_LINE
    assert DEMONSTRATION_LINE in state["copied"][1]
    exported = json.loads((data / "exports" / "edgecap-report-00001.json").read_text())
    assert exported["text"] == expected.text and exported["format"] == "edgecap-report/1"
    assert expected.text in (data / "exports" / "edgecap-report-00001.txt").read_text()
    assert json.loads((data / "settings.json").read_text())["beam"] == 1
    assert (out / "generate.png").stat().st_size > 10_000


@pytest.mark.slow
def test_history_survives_a_restart(first_session, kivy_env, app_bundle, tmp_path):
    state, data, _ = first_session
    p, again, _ = run_app(kivy_env, tmp_path, "restart", app_bundle, data)
    assert p.returncode == 0, p.stderr[-4000:]
    h = again["history_screen"]
    assert h["screen"] == "history" and h["history_count"] == 1 and again["rows_on_screen"] == 1
    assert h["beam"] == 1  # the setting chosen in the first session
    assert again["reopened"]["report_text"] == state["after"]["report_text"]
    assert again["reopened"]["findings"] == state["after"]["findings"]
    assert again["reopened"]["has_heatmap"]  # redrawn from the stored attention
    assert again["portrait_body"] == "vertical" and again["rotated"] == [True, "horizontal"]
    assert again["on_pause"] is True


@pytest.mark.slow
def test_unreadable_file_shows_its_message(kivy_env, app_bundle, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(CXR.read_bytes()[:2000])  # a PNG cut short
    p, state, _ = run_app(kivy_env, tmp_path, "study", app_bundle, tmp_path / "data", broken)
    assert p.returncode == 2  # headless: the study could not be used
    after = state["after"]
    assert after["screen"] == "main" and after["error_title"] == "This file could not be read as an image."
    assert "broken.png" in after["error_detail"] and after["generate_disabled"] and after["history_count"] == 0
    assert "could not be read" in p.stderr


@pytest.mark.slow
def test_photograph_is_flagged_not_reported(kivy_env, app_bundle, tmp_path):
    import cv2
    from skimage import data as skdata

    cat = tmp_path / "cat.png"
    cv2.imwrite(str(cat), skdata.chelsea()[:, :, ::-1])
    p, state, _ = run_app(kivy_env, tmp_path, "study", app_bundle, tmp_path / "data", cat)
    assert p.returncode == 0, p.stderr[-4000:]
    after = state["after"]
    title, detail, level = after["notices"][0]
    assert level == "error" and title == "This looks like a colour photograph, not a chest X-ray."
    assert "no report is shown" in detail and "colour image" in detail
    assert not after["findings_visible"] and not after["has_heatmap"]
    assert after["history"][0][0] == "Not a chest X-ray?" and after["history"][0][2]
    # issue #13 item 3: no report text, and neither Copy nor Export offered (pressing them anyway does nothing)
    model_text = caption(app_bundle, cat, after["threads"]).text
    assert model_text and model_text not in after["report_text"] and after["report_text"].startswith("No report")
    assert not after["actions_offered"]
    assert state["toast_after_actions"] == ""  # no "Report copied.", no "Saved ..."
    assert not list((tmp_path / "data" / "exports").glob("*"))


@pytest.mark.slow
def test_dicom_study(kivy_env, app_bundle, tmp_path, make_dicom):
    """A DICOM as a modality stores it (conftest.make_dicom: 12-bit values, rescale, window) from the real
    sample image's pixels."""
    import cv2

    dcm = tmp_path / "CXR25.dcm"
    dcm.write_bytes(make_dicom(cv2.imread(str(CXR), cv2.IMREAD_GRAYSCALE)))
    p, state, _ = run_app(kivy_env, tmp_path, "study", app_bundle, tmp_path / "data", dcm, size="1280x800")
    assert p.returncode == 0, p.stderr[-4000:]
    after = state["after"]
    assert after["screen"] == "report" and after["landscape"] and not after["notices"]
    assert after["report_text"] == caption(app_bundle, dcm, after["threads"]).text


@pytest.mark.slow
def test_cancel_frees_the_ui_and_discards_the_result(kivy_env, app_bundle, tmp_path):
    p, state, _ = run_app(kivy_env, tmp_path, "cancel", app_bundle, tmp_path / "data", CXR)
    assert p.returncode == 0, p.stderr[-4000:]
    assert state["running"]["busy"] and state["running"]["screen"] == "main"
    assert not state["cancelled"]["busy"] and "Cancelled" in state["cancelled"]["toast"]
    # the UI loop ran on while the worker was busy: clock ticks at 30 Hz and redrawn frames (busy bar)
    assert state["ticks_while_running"] >= 10 and state["frames_while_running"] >= 5
    assert state["ticks_after_cancel"] >= 20
    later = state["later"]
    assert later["screen"] == "main" and later["history_count"] == 0 and later["report_text"] == ""
    second = state["second"]
    assert second["screen"] == "report" and second["history_count"] == 1 and second["report_text"]


CLI = "import typer\nfrom edgecap.cli.edge_app import app_command\na = typer.Typer()\na.command()(app_command)\na()"


@pytest.mark.slow
def test_headless_cli_screenshot(kivy_env, app_bundle, tmp_path):
    import cv2

    shot = tmp_path / "tablet.png"
    cmd = [
        sys.executable,
        "-c",
        CLI,
        "--image",
        str(CXR),
        "--screenshot",
        str(shot),
        "--size",
        "1280x800",
        "--bundle",
        str(app_bundle),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    p = subprocess.run(cmd, env=kivy_env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-4000:]
    img = cv2.imread(str(shot))
    assert img.shape == (800, 1280, 3) and img[:, :400].std() > 20  # the X-ray panel is drawn
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    shot2 = tmp_path / "error.png"
    p = subprocess.run(
        cmd[:4] + [str(broken), "--screenshot", str(shot2)] + cmd[7:],
        env=kivy_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 2 and "could not be read" in p.stderr and shot2.is_file()
    p = subprocess.run(
        [sys.executable, "-c", CLI, "--screenshot", str(shot2)],
        env=kivy_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "--screenshot needs --image" in p.stderr
