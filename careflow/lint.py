"""``careflow lint``: every template of every campaign, checked before a customer sees it.

A run finds a template problem one customer at a time (``failed:
template_error``), after the campaign has started. Lint finds them all at
once, beforehand, and names the file, the line and the reason:

- syntax errors, and variables a template uses that the campaign does not
  give it (read from the template itself, so a misspelt name in an ``if``
  branch no sample takes is found too), ``customer.<field>`` that is no field;
- every template rendered for sample customers in each of the campaign's
  locales (every field filled, only the required ones, long names), the way
  a run renders it (the same sandbox, limits and StrictUndefined): what fails,
  what prints ``None`` for a customer without an optional field, a message
  that renders empty;
- the message as it goes out: an SMS over the segment limit (opt-out line
  included), a subject over its limit, a marketing email without its
  unsubscribe link or a service email with the placeholder left in it;
- HTML that is broken where it was written (tags not closed or closed out
  of order, images without alt text), line numbers in the template's own
  file, Jinja stripped out;
- a locale variant missing (zh-CN SMS but no zh-CN email: a zh-CN customer
  would get the English email), no template in the default locale, a channel
  named in campaign.yaml without its templates, a template file careflow
  would never read (``emial.en.txt.j2``), and templates outside campaign
  folders (layouts) that do not compile.

Lint knows nothing of segments or the route: the caller says what a
template's context is for a campaign and a sample customer
(``careflow/flows/preview.py`` builds it with the route's own ``template_context``).
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from html.parser import HTMLParser
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from careflow import registry
from careflow.campaigns import (
    CampaignSpec,
    campaign_folder_problems,
    journey_step_campaign,
    list_campaigns,
    load_campaign,
)
from careflow.db.models import Customer
from careflow.errors import ConfigError, RecipientError, TemplateError, TemplateLimitError
from careflow.journey_spec import (
    ENTRY_STEP,
    JourneySpec,
    SendStep,
    WaitForStep,
    WaitStep,
    journey_folder_problems,
    list_journeys,
    load_journey,
    template_prefix,
)
from careflow.rendering import Rendered, Renderer, locale_chain
from careflow.settings import Settings
from careflow.unsubscribe import PLACEHOLDER

#: elements that take no end tag
VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip


@dataclass(frozen=True, order=True)
class Problem:
    """One thing to fix: in which file, on which line (when one line is to blame), and why."""

    path: Path
    line: int
    reason: str

    def describe(self) -> str:
        """``templates/winback/sms.en.j2:3: reason`` (the path relative to here when it can)."""
        try:
            shown = os.path.relpath(self.path)
        except ValueError:  # another drive on Windows
            shown = str(self.path)
        if shown.startswith(".."):
            shown = str(self.path)
        return f"{shown}:{self.line}: {self.reason}" if self.line else f"{shown}: {self.reason}"


@dataclass(frozen=True)
class Sample:
    """A made-up customer a template is rendered for; ``customer`` holds the record's fields."""

    label: str
    customer: dict

    @property
    def locale(self) -> str:
        return self.customer["locale"]


# Every field a customer record has, filled in; "only required" keeps the name alone.
_PERSONAS = {
    "en": [
        (
            "every field",
            {
                "full_name": "Ada Lovelace",
                "given_name": "Ada",
                "family_name": "Lovelace",
                "mobile": "+447700900123",
                "email": "ada@example.com",
                "fax": "+442079460000",
                "time_zone": "Europe/London",
                "birthday": date(1990, 12, 10),
                "grade": "A",
                "owner": "Grace Hopper",
                "country": "United Kingdom",
                "preferred_channel": "email",
            },
        ),
        ("only required fields", {"full_name": "Sam Lee"}),
        (
            "long names",
            {
                "full_name": "Maximiliana Alexandrina Fitzwilliam-Montgomery-Featherstonehaugh",
                "given_name": "Maximiliana Alexandrina",
                "family_name": "Fitzwilliam-Montgomery-Featherstonehaugh",
                "owner": "Bartholomew Cholmondeley-Featherstonehaugh",
            },
        ),
    ],
    "zh": [
        (
            "every field",
            {
                "full_name": "李娜",
                "given_name": "娜",
                "family_name": "李",
                "mobile": "+8613812345678",
                "email": "li.na@example.com",
                "fax": "+862155550100",
                "time_zone": "Asia/Shanghai",
                "birthday": date(1988, 3, 8),
                "grade": "A",
                "owner": "王芳",
                "country": "China",
                "preferred_channel": "sms",
            },
        ),
        ("only required fields", {"full_name": "张伟"}),
        (
            "long names",
            {
                "full_name": "阿卜杜热合曼·买买提明·艾则孜",
                "given_name": "阿卜杜热合曼",
                "family_name": "艾则孜",
                "owner": "欧阳慕容·司马长风",
            },
        ),
    ],
}
_EMPTY_CUSTOMER = {c.name: None for c in Customer.__table__.c}


def samples_for(locale: str) -> list[Sample]:
    """Sample customers of ``locale``: every field, only required fields, long names.

    Chinese locales get Chinese names; any other locale the English personas.
    """
    language = locale.split("-", 1)[0].lower()
    personas = _PERSONAS.get(language, _PERSONAS["en"])
    out = []
    for i, (label, fields) in enumerate(personas, start=1):
        customer = {
            **_EMPTY_CUSTOMER,
            **fields,
            "id": i,
            "external_ref": f"sample-{i}",
            "locale": locale,
            "created_at": datetime(2024, 1, 15, 10, 0),
        }
        out.append(Sample(f"{locale}, {label}", customer))
    return out


#: ``context_for(spec, sample) -> dict``: the template context a run would build
ContextFor = Callable[[CampaignSpec, Sample], dict]


@dataclass
class LintReport:
    """What lint checked and what it found."""

    problems: list[Problem] = field(default_factory=list)
    campaigns: int = 0
    templates: int = 0
    renders: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# --- where a template is -------------------------------------------------------------------
@dataclass(frozen=True)
class _File:
    channel: str
    part: registry.TemplatePart
    locale: str
    path: Path
    #: an experiment's variant the file belongs to (``b.sms.en.j2``); None: the control's
    variant: str | None = None


def _part_patterns() -> list[tuple[re.Pattern, str, registry.TemplatePart]]:
    """A filename pattern per template part of every content channel."""
    out = []
    for name in registry.content_names():
        for part in registry.get(name).parts:
            before, _, after = part.stem.partition("{locale}")
            pattern = re.escape(before) + r"(?P<locale>[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]+)*)"
            out.append((re.compile(pattern + re.escape(after) + r"\Z"), name, part))
    return out


def _stem_examples() -> str:
    return ", ".join(
        p.stem.format(locale="<locale>")
        for n in registry.content_names()
        for p in registry.get(n).parts
    )


def _classify(
    folder: Path, variants: Sequence[str] = (), prefix: str = ""
) -> tuple[list[_File], list[Path]]:
    """The campaign's template files by channel, part, locale and experiment variant (a
    file named ``<variant>.<part>``); and .j2 files that are none. With ``prefix`` (a
    journey's send step: ``<step>.``) only the files that start with it."""
    patterns = _part_patterns()
    files, strays = [], []
    for path in sorted(folder.glob(f"{prefix}*.j2")):
        own = path.name[len(prefix) :]
        variant = next((v for v in variants if own.startswith(f"{v}.")), None)
        name = own[len(variant) + 1 :] if variant else own
        for pattern, channel, part in patterns:
            m = pattern.match(name)
            if m:
                files.append(_File(channel, part, m["locale"], path, variant))
                break
        else:
            strays.append(path)
    return files, strays


def variant_gaps(
    variants: Sequence[str], files: list[_File], control: set[tuple[str, str, str]],
    prefix: str = "",
) -> list[tuple[str | None, str]]:
    """(file name or None, reason) for each experiment variant without templates of its
    own, and each part a variant changes in some locales the control has it in but not
    in others (``control``: the control's (channel, part stem, locale)); ``prefix`` is a
    journey send step's ``<step>.``."""
    out: list[tuple[str | None, str]] = []
    for variant in variants:
        theirs = {(f.channel, f.part.stem, f.locale) for f in files if f.variant == variant}
        if not theirs:
            out.append((
                None,
                f"variant {variant} has no templates of its own "
                f"({prefix}{variant}.sms.en.j2...): it would send the control's message",
            ))  # fmt: skip
        # a part the variant changes, it changes in every locale the control has it
        changed = {(channel, stem) for channel, stem, _ in theirs}
        for channel, stem, loc in sorted(k for k in control - theirs if k[:2] in changed):
            out.append((
                f"{prefix}{variant}.{stem.format(locale=loc)}",
                f"missing: variant {variant} changes {channel} {stem.format(locale='*')} "
                f"but not for {loc}; those customers would get the control's",
            ))  # fmt: skip
    return out


def _line_of(path: Path, key: str) -> int:
    """The line of ``key:`` in a YAML file (0 when it is not there)."""
    try:
        for n, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if re.match(rf"\s*{re.escape(key)}\s*:", text):
                return n
    except OSError:
        pass
    return 0


# --- HTML as written ---------------------------------------------------------------------------
def markup_of(source: str, env: jinja2.Environment) -> str:
    """The literal text of a template with every Jinja tag, expression and comment taken
    out, line for line, so an HTML parser's line numbers are the template's own."""
    out: list[str] = []
    line = 1
    for lineno, token, value in env.lexer.tokeniter(source, None):
        if token != "data":
            continue
        if lineno > line:
            out.append("\n" * (lineno - line))
            line = lineno
        out.append(value)
        line += value.count("\n")
    return "".join(out)


class _TagChecker(HTMLParser):
    """Open and close tags must pair up, innermost first; images need alt text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[tuple[str, int]] = []
        self.found: list[tuple[int, str]] = []

    def _image(self, tag, attrs) -> None:
        if tag == "img" and "alt" not in dict(attrs):
            self.found.append(
                (
                    self.getpos()[0],
                    "<img> has no alt text: screen readers, and mail clients "
                    "that block images, show nothing in its place",
                )
            )

    def handle_starttag(self, tag, attrs):
        self._image(tag, attrs)
        if tag not in VOID_ELEMENTS:
            self.open.append((tag, self.getpos()[0]))

    def handle_startendtag(self, tag, attrs):
        self._image(tag, attrs)

    def handle_endtag(self, tag):
        line = self.getpos()[0]
        if tag in VOID_ELEMENTS:
            self.found.append((line, f"</{tag}>: <{tag}> takes no end tag"))
            return
        if not any(t == tag for t, _ in self.open):
            self.found.append((line, f"</{tag}> closes nothing: no <{tag}> is open here"))
            return
        while self.open:
            t, opened = self.open.pop()
            if t == tag:
                return
            self.found.append((opened, f"<{t}> is not closed: </{tag}> on line {line} comes first"))

    def finish(self) -> list[tuple[int, str]]:
        self.close()
        for t, opened in self.open:
            self.found.append((opened, f"<{t}> is never closed"))
        return self.found


def html_problems(source: str, env: jinja2.Environment) -> list[tuple[int, str]]:
    """(line, reason) for every tag problem in a template's HTML as written."""
    checker = _TagChecker()
    checker.feed(markup_of(source, env))
    return checker.finish()


# --- variables -------------------------------------------------------------------------------
#: names Jinja itself defines (not worth listing to a template's author)
_JINJA_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace"})


def _guarded_names(ast: nodes.Template) -> set[int]:
    """Names only tested for (``x is defined``) or given a default (``x | default(..)``)."""
    guarded = set()
    for test in ast.find_all(nodes.Test):
        if test.name in ("defined", "undefined") and isinstance(test.node, nodes.Name):
            guarded.add(id(test.node))
    for flt in ast.find_all(nodes.Filter):
        if flt.name in ("default", "d") and isinstance(flt.node, nodes.Name):
            guarded.add(id(flt.node))
    return guarded


def variable_problems(
    ast: nodes.Template, known: Iterable[str], customer_fields: Iterable[str]
) -> list[tuple[int, str]]:
    """(line, reason) for each variable the template reads that its context lacks."""
    known, fields = set(known), set(customer_fields)
    offered = ", ".join(sorted(known - _JINJA_GLOBALS))
    out = []
    guarded = _guarded_names(ast)
    loads = [n for n in ast.find_all(nodes.Name) if n.ctx == "load"]
    for name in sorted(meta.find_undeclared_variables(ast) - known):
        first = next((n for n in loads if n.name == name and id(n) not in guarded), None)
        if first is not None:
            reason = f"'{name}' is undefined: this campaign's templates get {offered}"
            out.append((first.lineno, reason))
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if (
            isinstance(target, nodes.Name)
            and target.name == "customer"
            and isinstance(attr, str)
            and attr not in fields
            and attr not in {"get", "items", "keys", "values"}
        ):
            reason = f"customer has no field '{attr}'; fields: {', '.join(sorted(fields))}"
            out.append((node.lineno, reason))
    return out


# --- rendering -------------------------------------------------------------------------------
class _Lint:
    def __init__(self, settings: Settings, context_for: ContextFor):
        self.settings = settings
        self.root = Path(settings.templates_dir)
        self.context_for = context_for
        self.renderer = Renderer.from_settings(settings)
        self.env = self.renderer.env
        # Before anything compiles: every printed value passes here, so a None is caught
        # at its line (a field the customer does not have, printed as the word "None").
        self._route_finalize = self.env.finalize
        self.env.finalize = self._finalize
        self._printed_none: list[tuple[str, int]] = []
        self.found: dict[tuple[Path, int, str], list[str]] = {}
        self.static_undefined: set[tuple[Path, int]] = set()
        self.report = LintReport()

    # problems, merged across samples
    def add(self, path: Path, line: int | None, reason: str, sample: Sample | None = None):
        labels = self.found.setdefault((Path(path), line or 0, reason), [])
        if sample is not None and sample.label not in labels:
            labels.append(sample.label)

    def problems(self) -> list[Problem]:
        out = []
        for (path, line, reason), labels in self.found.items():
            if labels:
                more = f"; and {len(labels) - 2} more" if len(labels) > 3 else ""
                shown = labels[:2] if more else labels
                reason = f"{reason} (sample customer: {'; '.join(shown)}{more})"
            out.append(Problem(path, line, reason))
        return sorted(out)

    def _finalize(self, value):
        if value is None:
            frame = sys._getframe(1)
            while frame is not None:
                template = frame.f_globals.get("__jinja_template__")
                if template is not None:
                    line = template.get_corresponding_lineno(frame.f_lineno)
                    self._printed_none.append((template.filename, line))
                    break
                frame = frame.f_back
        return self._route_finalize(value)

    def _name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def compile(self, path: Path) -> jinja2.Template | None:
        """The template at ``path``; a syntax error is a problem (in the file that has it)."""
        try:
            return self.env.get_template(self._name(path))
        except jinja2.TemplateSyntaxError as exc:
            self.add(Path(exc.filename or path), exc.lineno, f"syntax error: {exc.message}")
        return None

    def check_source(self, path: Path, context: dict | None) -> None:
        """Syntax, variables and HTML of one file as written."""
        self.report.templates += 1
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.add(path, 0, f"not UTF-8 text (byte {exc.start}): save it as UTF-8")
            return
        try:
            ast = self.env.parse(source, self._name(path), str(path))
        except jinja2.TemplateSyntaxError as exc:
            self.add(path, exc.lineno, f"syntax error: {exc.message}")
            return
        if context is not None:
            known = set(context) | {"locale"} | set(self.env.globals)
            for line, reason in variable_problems(ast, known, context.get("customer", {})):
                self.add(path, line, reason)
                self.static_undefined.add((path, line))
        if path.name.endswith(".html.j2"):
            for line, reason in html_problems(source, self.env):
                self.add(path, line, reason)

    def render_part(self, path: Path, context: dict, sample: Sample) -> str | None:
        template = self.compile(path)
        if template is None:
            return None
        self.report.renders += 1
        try:  # first where a runaway template is stopped (careflow/render_worker.py)
            self.renderer.render_file(template.name, context)
        except TemplateLimitError as exc:
            self.add(path, 0, str(exc), sample)
            return None
        except TemplateError:
            pass  # rendered again below, here, to find its line
        self._printed_none.clear()
        try:
            with self.env.message():
                text = self.env.render_bounded(template, context)
        except jinja2.TemplateSyntaxError as exc:  # in the layout it extends
            self.add(Path(exc.filename or path), exc.lineno, f"syntax error: {exc.message}")
            return None
        except Exception as exc:  # any failure is this template's problem, named below
            file, line = self._where(exc, path)
            if isinstance(exc, jinja2.TemplateNotFound):
                self.add(file, line, f"template {exc.name!r} not found")
                return None
            undefined = isinstance(exc, jinja2.UndefinedError)
            if not (undefined and (file, line) in self.static_undefined):
                message = getattr(exc, "message", None) or str(exc)
                if not isinstance(exc, jinja2.TemplateError | RecipientError | ConfigError):
                    message = f"{type(exc).__name__}: {message}"
                self.add(file, line, message, sample)
            return None
        for filename, line in self._printed_none:
            self.add(
                Path(filename),
                line,
                "prints None: a value this customer does not have "
                '(write {{ x or "" }} or wrap it in {% if x %})',
                sample,
            )
        return text

    def _where(self, exc: BaseException, fallback: Path) -> tuple[Path, int]:
        """The template file and line an exception was raised at (innermost)."""
        root = self.root.resolve()
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            try:
                Path(frame.filename).resolve().relative_to(root)
            except ValueError:
                continue
            if frame.filename.endswith(".j2"):
                return Path(frame.filename), frame.lineno or 0
        return fallback, 0

    # --- one campaign ------------------------------------------------------------------
    def campaign(self, name: str) -> None:
        folder = self.root / name
        yaml_path = folder / "campaign.yaml"
        try:
            spec = load_campaign(name, self.root)
        except ConfigError as exc:
            self.add(yaml_path, 0, str(exc).replace(f"{yaml_path}: ", ""))
            return
        self.report.campaigns += 1
        variants = spec.experiment.names[1:] if spec.experiment else []
        files, strays = _classify(folder, variants)
        for path in strays:
            self.add(
                path, 0, f"careflow never reads this file: template names are {_stem_examples()}"
            )
        ours = [f for f in files if f.channel in spec.channels and f.variant is None]
        locales = sorted({f.locale for f in ours})
        have = {(f.channel, f.part.stem, f.locale): f.path for f in ours}
        default = self.settings.default_locale

        for channel in spec.channels:
            parts = registry.get(channel).parts
            first = next(p for p in parts if p.required)
            if not any((channel, first.stem, loc) in have for loc in locales):
                self.add(
                    yaml_path,
                    _line_of(yaml_path, "channels"),
                    f"channels names {channel}, but there is no {channel} template: add "
                    f"{first.stem.format(locale=default)} (and one per locale)",
                )
                continue
            for part in parts:
                used = [loc for loc in locales if (channel, part.stem, loc) in have]
                if not used:  # an optional part nobody wrote (a text-only email)
                    continue
                for loc in locales:
                    if any((channel, part.stem, c) in have for c in locale_chain(loc, "")[:-1]):
                        continue
                    fallback = next(
                        (c for c in locale_chain(loc, default) if (channel, part.stem, c) in have),
                        None,
                    )
                    gets = (
                        f"{loc} customers would get {part.stem.format(locale=fallback)} instead"
                        if fallback
                        else f"{loc} customers would get no {part.field} part"
                    )
                    self.add(folder / part.stem.format(locale=loc), 0, f"missing: {gets}")
        if locales and not any(loc.split("-")[0] == default.split("-")[0] for loc in locales):
            self.add(
                folder,
                0,
                f"no template in CAREFLOW_DEFAULT_LOCALE={default}: customers whose "
                "language has no template of their own would get none",
            )

        for name, reason in variant_gaps(variants, files, set(have)):
            if name is None:
                self.add(yaml_path, _line_of(yaml_path, "variants"), reason)
            else:
                self.add(folder / name, 0, reason)

        try:
            contexts = [
                (sample, {**self.context_for(spec, sample), "locale": loc})
                for loc in locales or [default]
                for sample in samples_for(loc)
            ]
        except ConfigError as exc:  # a segment parameter campaign.yaml got wrong
            self.add(yaml_path, _line_of(yaml_path, "parameters"), str(exc))
            return
        some_context = contexts[0][1] if contexts else None
        for f in files:
            self.check_source(f.path, some_context if f.channel in spec.channels else None)

        for variant in [None, *variants]:
            for channel in spec.channels:
                for sample, context in contexts:
                    self.message(spec, channel, sample, context, variant)

    def message(
        self,
        spec: CampaignSpec,
        channel: str,
        sample: Sample,
        context: dict,
        variant: str | None = None,
    ) -> None:
        """Render one message for one sample (of an experiment's ``variant``): each part,
        then the whole as it goes out."""
        entry = registry.get(channel)
        parts: dict[str, str | None] = {}
        paths: dict[str, Path] = {}
        for part in entry.parts:
            path = (variant and self._find(spec.name, f"{variant}.{part.stem}", sample.locale)) or (
                self._find(spec.name, part.stem, sample.locale)
            )
            if path is None:
                if part.required:
                    return  # reported above as missing
                parts[part.field] = None
                continue
            paths[part.field] = path
            text = self.render_part(path, context, sample)
            if text is None:
                return
            parts[part.field] = text
        rendered = Rendered(**{k: (v.strip() if v is not None else None) for k, v in parts.items()})
        body_path = paths.get("body")
        if not rendered.body:
            self.add(body_path, 0, "renders empty", sample)
            return
        if rendered.subject is not None:
            subject = " ".join(rendered.subject.split())
            if not subject:
                self.add(paths["subject"], 0, "the subject renders empty", sample)
            limit = entry.max_subject_chars
            if limit and len(subject) > limit:
                self.add(
                    paths["subject"],
                    0,
                    f"subject has {len(subject)} characters; the limit is {limit}",
                    sample,
                )
        if channel == "email":
            self._unsubscribe(spec, rendered, paths)
        if entry.finish is not None:
            try:
                entry.finish(
                    rendered,
                    locale=sample.locale,
                    marketing=spec.marketing,
                    settings=self.settings,
                )
            except RecipientError as exc:
                self.add(body_path, 0, f"{exc.reason}: {exc.detail}", sample)

    def _unsubscribe(self, spec, rendered: Rendered, paths: dict) -> None:
        """The unsubscribe link where campaign.yaml says it belongs, and only there."""
        for field_name, text in (("body", rendered.body), ("html", rendered.html)):
            if text is None:
                continue
            has = PLACEHOLDER in text
            if not spec.marketing and has:
                self.add(
                    paths[field_name],
                    0,
                    f"campaign.yaml says marketing: false, so {PLACEHOLDER} would "
                    "go out as it stands (remove {% set marketing = true %} or the link)",
                )
            if spec.marketing and field_name == "html" and not has:
                self.add(
                    paths["html"],
                    0,
                    f"campaign.yaml says marketing: true, but the HTML has no "
                    f"{PLACEHOLDER} link: add {{% set marketing = true %}} under "
                    "{% extends %} so the layout's footer carries it",
                )

    def _find(self, campaign: str, stem: str, locale: str) -> Path | None:
        """The file a customer of ``locale`` gets, as the renderer chooses it (a journey's
        send step: ``<journey>/<step>.<stem>``)."""
        prefix = template_prefix(campaign)
        for loc in locale_chain(locale, self.settings.default_locale):
            path = self.root / f"{prefix}{stem.format(locale=loc)}"
            if path.is_file():
                return path
        return None

    def journey(self, name: str) -> None:
        """A journey's send steps rendered for sample customers in each locale their
        templates are written in, as the messages would go out (a journey.yaml that
        does not load is reported by :func:`lint_journeys`)."""
        try:
            spec = load_journey(name, self.root)
        except ConfigError:
            return
        folder = self.root / name
        patterns = _part_patterns()
        for step in spec.steps:
            if not isinstance(step, SendStep):
                continue
            campaign = journey_step_campaign(spec, step)
            locales = set()
            for path in folder.glob(f"{step.id}.*.j2"):
                rest = path.name.removeprefix(f"{step.id}.")
                for pattern, channel, _ in patterns:
                    if channel in campaign.channels and (m := pattern.match(rest)):
                        locales.add(m["locale"])
            try:
                contexts = [
                    (sample, {**self.context_for(campaign, sample), "locale": loc})
                    for loc in sorted(locales) or [self.settings.default_locale]
                    for sample in samples_for(loc)
                ]
            except ConfigError as exc:
                self.add(folder / "journey.yaml", 0, f"step {step.id!r}: {exc}")
                continue
            variants = campaign.experiment.names[1:] if campaign.experiment else []
            for variant in [None, *variants]:
                for channel in campaign.channels:
                    for sample, context in contexts:
                        self.message(campaign, channel, sample, context, variant)

    def shared(self, campaign_folders: set[str]) -> None:
        """Templates outside campaign folders (layouts): they must compile and nest."""
        for path in sorted(self.root.rglob("*.j2")):
            top = path.relative_to(self.root).parts[0]
            if top in campaign_folders:
                continue
            self.check_source(path, None)


def journey_problems(
    spec: JourneySpec, root: Path, default_locale: str, in_flight: dict[str, int] | None = None
) -> list[str]:
    """What is wrong with a journey that loads: steps nothing leads to, loops without a
    wait (an advance would go round them at once), a send step's missing templates, and a
    new version that deletes a step customers are on without ``moved:`` saying where
    they go (``in_flight``: customers per step, from the database)."""
    out = []
    ids = [s.id for s in spec.steps]
    seen, todo = set(), [ids[0]]
    while todo:
        step = todo.pop()
        if step not in seen:
            seen.add(step)
            todo.extend(spec.successors(step))
    out += [f"step {i!r}: no step leads here" for i in ids if i not in seen]
    timed = {s.id for s in spec.steps if isinstance(s, WaitStep | WaitForStep)}
    loop = _loop_without_wait(spec, [i for i in ids if i not in timed])
    if loop:
        out.append(f"steps {' -> '.join(loop)} go round without a wait or wait_for")
    folder = root / spec.name
    for step in spec.steps:
        if not isinstance(step, SendStep):
            continue
        for channel in step.channel_order:
            for part in registry.get(channel).parts:
                name = f"{step.id}.{part.stem.format(locale=default_locale)}"
                if part.required and not (folder / name).is_file():
                    out.append(f"step {step.id!r} sends {channel}, but {name} is missing")
        if step.experiment is not None:
            variants = step.experiment.names[1:]
            files, _ = _classify(folder, variants, f"{step.id}.")
            control = {
                (f.channel, f.part.stem, f.locale)
                for f in files
                if f.variant is None and f.channel in step.channel_order
            }
            for name, reason in variant_gaps(variants, files, control, f"{step.id}."):
                out.append(f"step {step.id!r}: {reason}" + (f" ({name})" if name else ""))
    for step, n in sorted((in_flight or {}).items()):
        if step != ENTRY_STEP and step not in ids and step not in spec.moved:
            out.append(
                f"{n} customer(s) are on step {step!r}, which this version deletes: add "
                f"moved: {{{step}: <a step>}} to say where they go"
            )
    return out


def _loop_without_wait(spec: JourneySpec, untimed: list[str]) -> list[str] | None:
    """A cycle among ``untimed`` steps, as its ids (the first again at the end)."""
    allowed = set(untimed)
    done: set[str] = set()

    def visit(step: str, path: list[str]) -> list[str] | None:
        if step in path:
            return path[path.index(step) :] + [step]
        if step in done:
            return None
        for nxt in spec.successors(step):
            if nxt in allowed and (found := visit(nxt, [*path, step])):
                return found
        done.add(step)
        return None

    return next((c for s in untimed if (c := visit(s, []))), None)


def lint_journeys(
    settings: Settings,
    names: Sequence[str] | None = None,
    in_flight: Callable[[str], dict[str, int]] | None = None,
) -> list[Problem]:
    """Every journey (or ``names``): its file, its graph, its send steps' templates and,
    with ``in_flight``, its version against the customers on each step."""
    root = Path(settings.templates_dir)
    out = [Problem(root, 0, text) for text in journey_folder_problems(root)]
    for name in names if names is not None else list_journeys(root):
        path = root / name / "journey.yaml"
        try:
            spec = load_journey(name, root)
        except ConfigError as exc:
            out.append(Problem(path, 0, str(exc).replace(f"{path}: ", "")))
            continue
        flight = in_flight(name) if in_flight else None
        for text in journey_problems(spec, root, settings.default_locale, flight):
            out.append(Problem(path, 0, text))
    return out


def lint_templates(
    settings: Settings,
    context_for: ContextFor,
    campaigns: Sequence[str] | None = None,
    in_flight: Callable[[str], dict[str, int]] | None = None,
) -> LintReport:
    """Check ``campaigns`` (default: all, and every journey) and the shared templates;
    every problem found."""
    lint = _Lint(settings, context_for)
    root = Path(settings.templates_dir)
    known = list_campaigns(root)
    for text in campaign_folder_problems(root):
        lint.add(root, 0, text)
    for name in campaigns or known:
        if name not in known:
            lint.add(root, 0, f"no campaign {name!r}; campaigns: {', '.join(known) or 'none'}")
            continue
        lint.campaign(name)
    if not campaigns:
        for name in list_journeys(root):
            lint.journey(name)
        lint.shared(
            {p.parent.name for p in root.glob("*/campaign.yaml")}
            | {p.parent.name for p in root.glob("*/journey.yaml")}
        )
    lint.report.problems = lint.problems()
    if not campaigns:
        lint.report.problems = sorted(
            lint.report.problems + lint_journeys(settings, in_flight=in_flight)
        )
    return lint.report
