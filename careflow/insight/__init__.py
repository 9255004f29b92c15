"""Customer insight: reports an analyst reads, computed once into plain data.

Each report is computed by one function into a frozen dataclass of pandas
DataFrames (``careflow.insight.pyramid.pyramid_report``, ``careflow.insight.clv``), then
rendered by skins that hold no report logic: text and markdown tables
(``careflow.insight.render``; the markdown is the Prefect artifact), JSON and CSV
(``careflow.insight.render``) and a standalone HTML page with charts
(``careflow.insight.html``). ``careflow.insight.overdue`` lists the ``contact_due`` segment per
owner: who should have been contacted and was not.

This is its own folder, not part of the core, because it reads the segments:
the pyramid report shows the very tiers and RFM scores the ``pyramid`` and
``vip`` segments select by (and the core imports nothing above it).
"""
