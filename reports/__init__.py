"""Tables and figures from tracked runs, and the main job that makes them.

- :mod:`reports.runs`: runs, their metrics and frame-weight artifacts read back from MLflow;
- :mod:`reports.tables`: paper-style result tables as data (``build_tables``), with the published
  reference numbers (``reference_numbers.csv``); :mod:`reports.table_render` writes them as
  Markdown, LaTeX, HTML and CSV;
- :mod:`reports.ranks`: per-query ranks (``ranks.npz``); :mod:`reports.stats`: paired tests,
  bootstrap intervals, Holm, power (pure functions); :mod:`reports.significance`: a table's
  intervals, Holm marks, significance-aware bold and smallest detectable Δ;
  :mod:`reports.compare`: ``eabench report compare A B``;
- :mod:`reports.weight_stats`: share of weight on relevant frames / annotated moments (with a
  Wilcoxon test over videos) and weight entropy; :mod:`reports.weight_figures`,
  :mod:`reports.curves` (drawing shared with :mod:`harness.figures`) and
  :mod:`reports.report_figures` (writing them for a report): the figures;
- :mod:`reports.labels` (paper row labels and order), :mod:`reports.sources` (synthetic truth,
  thumbnails), :mod:`reports.page` (``index.html``);
- :mod:`reports.build`: ``build_report``, everything above for some studies or runs;
- :mod:`reports.reproduce`: the main job, data -> paper-table studies -> report page;
- :mod:`reports.cli`: ``eabench report ...`` and ``eabench reproduce``.

The report page (``index.html``) is checked in headless Chromium by ``.ci/check_page.py``.
"""
