"""The report page in a real browser (headless Chromium over the DevTools pipe, .ci/check_page.py):
a report built here renders with every image loaded, no console error and non-empty tables; and the
check does fail on a broken image, a console error and an empty table.

Skipped without Chromium (`bash .ci/chromium.sh` installs Debian's package; .ci/run does so).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest_reports import Store, metrics, weights_npz, write_truth

from reports.build import build_report

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_page", ROOT / ".ci" / "check_page.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


check = _checker()
if check.find_chromium() is None:
    pytest.skip("no Chromium (bash .ci/chromium.sh installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    s = Store(root / "runs")
    write_truth(root / "data")
    parent = s.study("browser-study", table="meanP")
    params = {"data_root": str(root / "data"), "frame_cache": str(root / "none")}
    hist = [{"train/loss": 2.0, "t2v/R1": 10.0}, {"train/loss": 1.5, "t2v/R1": 20.0}]
    for v, g, w in (("meanP", False, False), ("meanP_E4", True, False), ("meanP_A4", False, True)):
        s.run(v, t2v=metrics(40.0), study="browser-study", parent=parent, table="meanP", dataset="synthetic",
              npz=weights_npz(gates=g, weights=w), params=params, history=hist, ranks={"t2v": np.r_[[1] * 6, [3] * 4]})
    res = build_report(s.client, studies=["browser-study"], out=root / "report", videos=2, fig_formats=("png",),
                       tracking_uri=s.uri, log_artifacts=False)
    return res.index


def _copy(index: Path, dest: Path) -> Path:
    shutil.copytree(index.parent, dest)
    return dest / index.name


def test_report_page_renders_clean(page: Path) -> None:
    assert check.check_page(page) == []


def test_check_fails_on_broken_image_console_error_and_empty_table(page: Path, tmp_path: Path) -> None:
    broken = _copy(page, tmp_path / "broken")
    png = sorted((broken.parent / "figures").glob("*.png"))[0]
    png.unlink()
    problems = check.check_page(broken)
    assert any(p.startswith("broken image:") and png.name in p for p in problems)

    noisy = _copy(page, tmp_path / "noisy")
    noisy.write_text(noisy.read_text().replace("</body>", "<script>console.error('planted')</script></body>"))
    assert any("planted" in p for p in check.check_page(noisy))

    empty = _copy(page, tmp_path / "empty")
    html = empty.read_text()
    start = html.index("<tbody>")
    empty.write_text(html[:start] + "<tbody></tbody>" + html[html.index("</tbody>", start) + 8 :])
    assert any(p.startswith("empty table") for p in check.check_page(empty))


def test_command_line_exit_codes(page: Path, capsys) -> None:
    assert check.main([str(page)]) == 0
    assert "ok:" in capsys.readouterr().out
