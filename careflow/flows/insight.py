"""The pyramid report as a Prefect flow: markdown and table artifacts, and the HTML page.

Deploy it like a campaign (monthly, say) to keep a history of the pyramid
in the Prefect UI: each run leaves the whole report, its four charts
included, as a markdown artifact (``pyramid-report``: the charts are images
inside the artifact's text, so the UI shows them wherever it is opened) and
the tier table as a table artifact (``pyramid-tiers``). With ``html`` it also
writes the same report as an offline page under the database's
``CAREFLOW_HOME/reports/``, to mail or archive. `careflow report pyramid`
prints the same report without Prefect.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from careflow import db
from careflow.clock import resolve_as_of
from careflow.flows.params import PyramidAsOf, PyramidHtml, PyramidParameters, PyramidPrevious
from careflow.insight.html import as_html, charts_markdown
from careflow.insight.pyramid import pyramid_report
from careflow.insight.render import as_dict, as_markdown, tier_rows
from careflow.settings import load_settings


@flow(name="pyramid-report")
def pyramid_report_flow(
    as_of: PyramidAsOf = None,
    previous: PyramidPrevious = None,
    parameters: PyramidParameters = None,
    html: PyramidHtml = True,
) -> dict:
    """The customer pyramid and RFM report as of a date (default: now), as artifacts.

    ``parameters`` are the pyramid segment's (window_days, vip_pct, ...).
    Returns the report as JSON-ready data.
    """
    logger = get_run_logger()
    settings = load_settings()
    engine = db.engine_for(settings.effective_database_url)
    db.ensure_schema(engine)
    day, _ = resolve_as_of(as_of, settings.time_zone)
    report = pyramid_report(
        engine, day, previous=previous, params=parameters, main_currency=settings.main_currency
    )
    create_markdown_artifact(
        markdown=as_markdown(report, charts=charts_markdown(report)),
        key="pyramid-report",
        description=f"Customer pyramid and RFM scores as of {day.isoformat()}",
    )
    header, rows = tier_rows(report)
    create_table_artifact(
        table=[dict(zip(header, row, strict=True)) for row in rows],
        key="pyramid-tiers",
        description=f"Pyramid tiers as of {day.isoformat()}",
    )
    if html:
        folder = settings.home / "reports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pyramid-{day.isoformat()}.html"
        path.write_text(as_html(report), encoding="utf-8")
        logger.info("pyramid report as a page (the charts are in the artifact too): %s", path)
    return as_dict(report)
