"""`edgecap device-check`: run a bundle on a Raspberry Pi's CPU, emulated, before shipping it, and compare with here.

    edgecap device-check --target pi5                         # the default bundle, the bundled sample studies
    edgecap device-check --target pi4 --bundle bundles/int8 --images a.png b.png
    edgecap device-check --target pi5 --runtime tflite-runtime-2.14    # the old runtime instead of ai-edge-litert
    edgecap device-check --target pi5 --app-screenshot app.png         # also the app, headless, on the first study

Builds (first run, then cached under ~/.cache/edgecap/device/<target>, or $EDGECAP_DEVICE_CACHE) an aarch64
Debian-bookworm Python 3.11 under qemu-user with edgecap's device install from aarch64 wheels (device.emulation),
runs `edgecap caption` there greedy and with beam 3, and compares the tokens with this machine's
(device.check). `--runtime tflite-runtime-2.14` installs tflite-runtime 2.14.0 (numpy 1) there instead of
ai-edge-litert, beside the default install: the check of the manifest's `runtime.tflite_runtime_2_14_aarch64`
statement. `--app-screenshot` adds Kivy and Mesa's software GL there and runs `edgecap app --screenshot` on the
first study (the first with two views), its report compared with this machine's at the app's beam size. What
this proves and what not: docs/devices.md.

Exit status: 0 every report identical or a near tie (the int8 rule of `edgecap bundle compare`) and the app's
report (with --app-screenshot) identical; 1 some report differs, or the emulated device could not be built or
run (the message says what to install); 2 bad usage (an unknown target or runtime, a missing image, an unusable
bundle).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from edgecap.cli.common import EXIT_FAILED, bundle_option, fail, print_table


def device_check(
    target: str = typer.Option("pi5", "--target", help="The device CPU: pi5 (Cortex-A76) or pi4 (Cortex-A72)."),
    bundle: Optional[Path] = bundle_option(),
    images: Optional[List[Path]] = typer.Option(None, "--images", help="Images to caption, one study each "
                                                                       "(repeatable); default: the bundled sample "
                                                                       "studies, frontal + lateral where present."),
    runtime: str = typer.Option("litert", "--runtime", help="The interpreter installed on the device: litert "
                                                            "(ai-edge-litert, the default install) or "
                                                            "tflite-runtime-2.14 (tflite-runtime 2.14.0, numpy 1)."),
    app_screenshot: Optional[Path] = typer.Option(None, "--app-screenshot", help="Also run the app headless on the "
                                                                                 "device (the first study with two "
                                                                                 "views) and save its screen here "
                                                                                 "(.png)."),
) -> None:
    """Caption studies on an emulated Raspberry Pi (aarch64 under qemu, the Pi's wheels) greedy and with beam 3,
    and compare with this machine: exit 0 when every report is identical or a near tie."""
    from edgecap.device.check import check_app, check_device, sample_studies, studies_from_images
    from edgecap.device.emulation import RUNTIMES, TARGETS, EmulationError
    from edgecap.runtime.bundle import BundleError

    if target not in TARGETS:
        fail(f"unknown --target {target!r}: one of {', '.join(TARGETS)}")
    if runtime not in RUNTIMES:
        fail(f"unknown --runtime {runtime!r}: one of {', '.join(RUNTIMES)}")
    missing = [str(p) for p in images or [] if not p.is_file()]
    if missing:
        fail(f"no such image: {', '.join(missing)}")
    if app_screenshot is not None and app_screenshot.suffix.lower() != ".png":
        fail(f"--app-screenshot must be a .png file, got {app_screenshot}")
    studies = studies_from_images(images) if images else sample_studies()
    log = lambda line: typer.echo(line, err=True)  # noqa: E731
    start = time.perf_counter()
    try:
        _note_runtime_statement(bundle, runtime)
        result = check_device(target, bundle, studies, log=log, runtime=runtime)
        app = None
        if app_screenshot is not None:
            first = next((s for s in studies if s.lateral is not None), studies[0])
            app = check_app(target, bundle, first, app_screenshot, log=log)
    except BundleError as e:
        fail(str(e))
    except EmulationError as e:
        fail(str(e), EXIT_FAILED)
    beams = sorted({o.beam for o in result.outcomes})
    by = {(o.study, o.beam): o for o in result.outcomes}
    rows = [["study", *(f"beam {b}" for b in beams)]]
    rows += [[s.uid, *(_cell(by[(s.uid, b)]) for b in beams)] for s in studies]
    print_table(rows, "l")
    for o in result.outcomes:
        if o.verdict != "identical":
            gap = f", tie gap {o.tie_gap:.3f} nats" if o.tie_gap is not None else ""
            typer.echo(f"\nstudy {o.study}, beam {o.beam} ({o.verdict}{gap}{', ' + o.error if o.error else ''}):\n"
                       f"  host:   {o.host}\n  device: {o.device}")
    cache = "built" if result.built else "cached"
    typer.echo(f"\n{target}, {result.interpreter}: {'PASS' if result.passed else 'FAIL'}; device {cache} in "
               f"{result.prepare_s:.0f} s, captions under emulation {result.device_s:.0f} s, "
               f"total {time.perf_counter() - start:.0f} s")
    if app is not None:
        verdict = "identical" if app.passed else f"DIFFERS\n  host:   {app.host}\n  device: {app.device}"
        typer.echo(f"app on {target}, study {app.study}, beam {app.beam}: report {verdict}; screen saved to "
                   f"{app.screenshot} ({app.seconds:.0f} s under emulation)")
    if not result.passed or (app is not None and not app.passed):
        raise typer.Exit(EXIT_FAILED)


def _note_runtime_statement(bundle: Optional[Path], runtime: str) -> None:
    """Say up front when the bundle's manifest already says tflite-runtime 2.14 does not run it on aarch64."""
    from edgecap.runtime.captioner import default_bundle_path
    from edgecap.runtime.manifest import Manifest

    if runtime != "tflite-runtime-2.14":
        return
    statement = Manifest.load(bundle or default_bundle_path()).runtime.get("tflite_runtime_2_14_aarch64")
    if statement is False:
        typer.echo("note: this bundle's manifest says tflite-runtime 2.14 does not run it on aarch64 "
                   "(runtime.tflite_runtime_2_14_aarch64 = false); checking anyway", err=True)


def _cell(outcome) -> str:
    return outcome.verdict if outcome.tie_gap is None else f"{outcome.verdict} ({outcome.tie_gap:.3f})"
