"""The Jinja sandbox careflow renders templates in, bounded in time and size.

Marketers write templates. Jinja's sandbox keeps a template away from Python's
internals, but not from looping for twenty minutes or building a gigabyte
string, and one such template would stall a whole run. So each message gets
a deadline (``CAREFLOW_RENDER_TIMEOUT_SECONDS``, default 2 s) and a size
(``CAREFLOW_RENDER_MAX_CHARS``, default 200,000 characters, all parts of an
email together); crossing either is a ``TemplateError`` saying which, and the
route records that recipient as ``failed: template_error`` and goes on.

**Time: cooperative checkpoints.** Compiling a template, we put a deadline
check at the top of every ``for`` body, macro and call block. Work that runs
long runs through one of those (each single step is bounded below), and
the check raises from template code, at a known place, in whatever thread
renders (Prefect runs tasks in worker threads, where SIGALRM cannot reach).
A loop iteration pays one clock read (~0.1 µs). Considered and rejected: a
watchdog thread raising into the rendering thread with
``PyThreadState_SetAsyncExc``. That exception lands at whatever bytecode the
thread is running: Babel's locale loader does ``_cache_lock.acquire()`` and
then ``try:``, so an exception between the two leaves the lock held and
every later render in the process waits for ever; and one raised just as a
render finishes lands in the caller unless every exit clears it under a
lock. A process per render could be killed and memory-capped, but would
cost milliseconds per message against ~12 µs for an SMS: instead a
long-lived render worker renders a batch's messages and is killed only when
one of them runs away (careflow/render_worker.py, the hard backstop for
what these checks cannot see). The limits add about 2 µs per message
(bench/render_timing.py: 11.0 -> 12.8 µs for the birthday SMS, 34 -> 38 µs
for its three-part email).

**Size: predicted before built.** Neither a deadline nor an async exception
can interrupt one long C call such as ``'x' * 10**9``, so operations whose
result can be much larger than their inputs are checked on the size they
are about to build: ``*``, ``+`` and ``%`` (intercepted binary operators;
``**`` and ``*`` on integers are capped in bits), ``~``, the padding and
repeating filters and ``str`` methods (``center``, ``indent``, ``wordwrap``,
``format``, ``replace``, ``join``, ``ljust``, ``zfill``, ``expandtabs``,
``translate``, ``str.format``...), ``batch``/``slice`` fill counts,
``tojson`` indents, ``sum`` over lists (linear here, quadratic in Python) and
``lipsum``. Output buffered by ``{% set %}`` blocks, macros, call and filter
blocks is counted as it grows, and the template's own output is consumed
chunk by chunk and stopped past the limit. No single value may be longer
than the limit, and the text built by checked operations in one message is
capped at ``WORK_FACTOR`` times it, which stops a string growing in a loop
long before the deadline would. Lists cannot be grown in place (this is the
immutable sandbox: no ``append``/``extend``).

**Values: measured as they are made.** Comparing, printing or serialising a
value is one C call whose cost is the value's size, and a list doubled in a
loop (``{% set ns.x = [ns.x, ns.x] %}``) is small in memory and enormous as
text. So every value a filter, a call or a list, tuple or dict literal makes,
and every namespace just assigned to, is measured (``made``): as text it must
fit the size limit, and it may nest at most ``MAX_DEPTH`` deep (namespaces
and a dict's views count by what they hold; a value holding itself is too
deep). Made text counts towards the work budget. ``pprint`` is measured
before it formats (its work grows with size times depth), ``tojson`` before
it serialises.

These checks stop the mistakes that reach production and the plain ways of
abusing a template. They bound what a template builds, not every slow
algorithm (a dict of integers whose hashes collide is one C call of
minutes): the render worker's deadline and memory limit stop those.
"""

from __future__ import annotations

import math
import re
import string
import threading
import types
from itertools import chain
from time import perf_counter
from typing import ClassVar

from jinja2 import nodes, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator
from jinja2.filters import (
    do_batch,
    do_center,
    do_format,
    do_indent,
    do_pprint,
    do_replace,
    do_tojson,
    do_wordwrap,
    make_attrgetter,
    sync_do_join,
    sync_do_slice,
    sync_do_sum,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

from careflow.errors import TemplateError

#: Text that checked operations may build in one message, in multiples of the size limit.
WORK_FACTOR = 20
#: Largest integer a template may make with ``*`` or ``**``: ~4,900 decimal digits.
MAX_INT_BITS = 16_384
#: Widest ``tojson`` indent (its output grows with indent times depth times items).
MAX_JSON_INDENT = 16
#: Deepest nesting of lists, tuples, dicts and namespaces a template may build.
MAX_DEPTH = 32

_PRINTF_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_GROWING_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "join", "replace", "translate",
     "format", "format_map", "to_bytes"}
)  # fmt: skip
_METHOD_TYPES = (types.BuiltinMethodType, types.MethodType)
_CONTAINERS = (list, tuple, set, frozenset, dict, type({}.keys()), type({}.values()),
               type({}.items()))  # a dict's views print all it holds
_MEASURED = (*_CONTAINERS, Namespace)
_SEQUENCES = (str, bytes, list, tuple)


def measure(value, limit: int, depth: int = 0) -> tuple[int, int]:
    """(about ``len(str(value))``, how deeply it nests), without building the text; stops
    counting past ``limit``. A value nested more than ``MAX_DEPTH`` deep is refused here:
    it is a value that holds itself or was nested in a loop, and Python's own comparisons
    and string forms of such values run as one long call nothing can interrupt."""
    if isinstance(value, (str, bytes)):
        return len(value), depth
    if isinstance(value, int):
        return value.bit_length() * 30103 // 100_000 + 2, depth  # digits: bits * log10(2)
    if isinstance(value, Namespace):
        value = value._Namespace__attrs  # its string form is its attributes'
    if not isinstance(value, _CONTAINERS):
        return 32, depth  # dates, decimals, undefined: short
    if depth >= MAX_DEPTH:
        raise TemplateError(
            f"a value nested more than {MAX_DEPTH} levels deep (a list, dict or namespace "
            "that holds itself, or one nested in a loop)"
        )
    total, deepest = 2, depth + 1
    for item in chain.from_iterable(value.items()) if isinstance(value, dict) else value:
        size, nested = measure(item, limit - total, depth + 1)
        total += size + 2
        deepest = max(deepest, nested)
        if total > limit:
            break
    return total, deepest


def text_size(value, limit: int) -> int:
    """About ``len(str(value))``, without building it; stops counting past ``limit``."""
    return measure(value, limit)[0]


def _ints_in(*values) -> int:
    """Sum of the integers among ``values`` and their items (for ``*`` widths)."""
    total = 0
    for value in values:
        items = value.values() if isinstance(value, dict) else value
        for item in items if isinstance(value, (tuple, list, dict)) else (value,):
            if isinstance(item, int):
                total += abs(item)
    return total


def printf_size(fmt: str | bytes, args, limit: int) -> int:
    """Upper bound of ``len(fmt % args)``: widths and precisions make text from nothing."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    size = len(text) + text_size(args, limit)
    for width, precision in _PRINTF_FIELD.findall(text):
        for number in (width, precision):
            size += _ints_in(args) if number == "*" else int(number or 0)
    return size


def format_size(fmt: str, args, kwargs, limit: int) -> int:
    """Upper bound of ``len(fmt.format(*args, **kwargs))``."""
    size = len(fmt) + text_size(args, limit) + text_size(kwargs, limit)
    for _literal, _field, spec, _conversion in string.Formatter().parse(fmt):
        if spec:
            size += sum(int(n) for n in re.findall(r"\d+", spec))
            if "{" in spec:  # a width taken from the arguments
                size += _ints_in(args, kwargs)
    return size


class _Budget:
    """What one message may still spend; one per rendering thread at a time."""

    __slots__ = ("deadline", "output_left", "work_left")

    def __init__(self, deadline: float, output_left: int, work_left: int):
        self.deadline, self.output_left, self.work_left = deadline, output_left, work_left


def _checkpoint(lineno: int) -> nodes.ExprStmt:
    """A deadline check, compiled to ``environment.render_checkpoint()``.

    Jinja allows no custom node types, so the check is an expression statement
    naming an environment attribute, which only this code generator creates.
    """
    return nodes.ExprStmt(nodes.EnvironmentAttribute("render_checkpoint"), lineno=lineno)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator plus checkpoints, bounded buffers and checked ``~``."""

    def visit_Template(self, node, frame=None):
        for looping in list(node.find_all((nodes.For, nodes.Macro, nodes.CallBlock))):
            looping.body.insert(0, _checkpoint(looping.lineno))
        super().visit_Template(node, frame)

    def visit_ExprStmt(self, node, frame):
        target = node.node
        if isinstance(target, nodes.EnvironmentAttribute) and target.name == "render_checkpoint":
            self.writeline("environment.render_checkpoint()", node)
        else:
            super().visit_ExprStmt(node, frame)

    def buffer(self, frame):
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def visit_Assign(self, node, frame):
        super().visit_Assign(node, frame)
        for name in sorted({ref.name for ref in node.find_all(nodes.NSRef)}):
            self.writeline(f"environment.made({frame.symbols.ref(name)}, charge=False)")

    def visit_Concat(self, node, frame):
        self.write("environment.built(")
        super().visit_Concat(node, frame)
        self.write(")")

    # Values a template makes (calls go through the sandbox's ``call``) are measured as
    # they are made: ``environment.made(...)``.
    def _made(visit):
        def visit_made(self, node, frame, *args, **kwargs):
            if getattr(node, "ctx", "load") != "load":  # an assignment target
                return visit(self, node, frame, *args, **kwargs)
            self.write("environment.made(")
            visit(self, node, frame, *args, **kwargs)
            self.write(")")

        return visit_made

    visit_Filter = _made(CodeGenerator.visit_Filter)
    visit_List = _made(CodeGenerator.visit_List)
    visit_Tuple = _made(CodeGenerator.visit_Tuple)
    visit_Dict = _made(CodeGenerator.visit_Dict)
    del _made


class _BoundedBuffer(list):
    """Output collected by a set block, macro or filter block; raises once too long."""

    __slots__ = ("_env", "_size")

    def __init__(self, env: BoundedSandbox):
        super().__init__()
        self._env, self._size = env, 0

    def append(self, piece):
        self._grow(len(piece))
        super().append(piece)

    def extend(self, pieces):
        pieces = tuple(pieces)
        self._grow(sum(map(len, pieces)))
        super().extend(pieces)

    def _grow(self, added: int) -> None:
        self._size += added
        self._env.check_size(self._size, "a block of output")
        self._env.charge(added)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable Jinja sandbox whose renders stop at a deadline and a size.

    Render through :meth:`message` and :meth:`render_bounded`; a template
    rendered any other way runs with the size checks but without a deadline.
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "+", "%", "**"})

    def __init__(self, *, timeout_seconds: float, max_chars: int, **options):
        super().__init__(**options)
        self.timeout_seconds, self.max_chars = timeout_seconds, max_chars
        self._local = threading.local()
        self.filters.update(_bounded_filters(self))
        self.globals["lipsum"] = self._lipsum

    # --- one message ----------------------------------------------------------------
    def message(self) -> _MessageLimits:
        """Context manager: the renders inside share one deadline and one size budget."""
        return _MessageLimits(self)

    def render_bounded(self, template, context: dict) -> str:
        """Render ``template`` inside :meth:`message`, stopping at its limits."""
        budget = self._local.budget
        left, chunks = budget.output_left, []
        # No deadline check per chunk: between two chunks of top-level output runs
        # either straight-line code or a loop or macro, which checks for itself.
        for chunk in template.generate(context):
            left -= len(chunk)
            if left < 0:
                raise TemplateError(
                    f"the message is longer than {self.max_chars:,} characters "
                    "(CAREFLOW_RENDER_MAX_CHARS)"
                )
            chunks.append(chunk)
        budget.output_left = left
        return "".join(chunks)

    # --- called from compiled templates ---------------------------------------------
    def render_checkpoint(self) -> None:
        budget = getattr(self._local, "budget", None)
        if budget is not None and perf_counter() > budget.deadline:
            raise self._too_slow()

    def bounded_buffer(self) -> _BoundedBuffer:
        return _BoundedBuffer(self)

    def built(self, value):
        """A ``~`` result: already built, but it must not feed a runaway loop."""
        self.grow(len(value), "a joined string")
        return value

    def made(self, value, charge: bool = True):
        """A value a filter, call or literal just made, or a namespace just assigned to:
        text counts towards the message's work; a list, tuple, dict or namespace must be
        within the size limit and ``MAX_DEPTH`` deep. So no value a template holds is too
        large or too deep for the one long C call that compares, prints or serialises it."""
        if isinstance(value, str):
            self.charge(len(value))
        elif isinstance(value, _MEASURED):
            size = text_size(value, self.max_chars)
            self.check_size(size, "a value")
            if charge:
                self.charge(size)
        return value

    def call(__self, __context, __obj, *args, **kwargs):  # as Jinja names them
        return __self.made(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context, operator, left, right):
        check = self._binop_checks.get(operator)
        if check is not None:
            check(self, left, right)
        return self.binop_table[operator](left, right)

    def wrap_str_format(self, value):
        """Also wraps the ``str`` methods that pad or repeat (the sandbox calls this
        for every attribute a template reads)."""
        wrapped = super().wrap_str_format(value)
        if not isinstance(value, _METHOD_TYPES) or value.__name__ not in _GROWING_METHODS:
            return wrapped
        owner = value.__self__
        if value.__name__ == "to_bytes" and isinstance(owner, int):
            return self._to_bytes(value)
        if not isinstance(owner, (str, bytes)):
            return wrapped
        method, name = wrapped or value, value.__name__

        def checked(*args, **kwargs):
            if name == "join" and args:  # measure the items, then join what was measured
                args = (list(args[0]), *args[1:])
            self.grow(self._method_size(owner, name, args, kwargs), f"{name}()")
            return method(*args, **kwargs)

        return checked

    def _to_bytes(self, method):
        def checked(length=1, *args, **kwargs):
            self.grow(length if isinstance(length, int) else 0, "to_bytes()")
            return method(length, *args, **kwargs)

        return checked

    # --- accounting -----------------------------------------------------------------
    def check_size(self, size: int, what: str) -> None:
        if size > self.max_chars:
            raise TemplateError(
                f"{what} of {size:,} characters is over the limit of {self.max_chars:,} "
                "(CAREFLOW_RENDER_MAX_CHARS)"
            )

    def charge(self, size: int) -> None:
        budget = getattr(self._local, "budget", None)
        if budget is not None:
            budget.work_left -= size
            if budget.work_left < 0:
                raise TemplateError(
                    f"the template builds more than {WORK_FACTOR * self.max_chars:,} "
                    "characters of text for one message (a string growing in a loop?)"
                )

    def grow(self, size: int, what: str) -> None:
        """Account for a value of ``size`` characters about to be built."""
        self.check_size(size, what)
        self.charge(size)

    def _too_slow(self) -> TemplateError:
        return TemplateError(
            f"rendering took longer than {self.timeout_seconds:g} s "
            "(CAREFLOW_RENDER_TIMEOUT_SECONDS)"
        )

    def _check_int_bits(self, bits: int) -> None:
        if bits > MAX_INT_BITS:
            raise TemplateError(f"a number of about {bits:,} bits is too large for a template")

    def _check_product(self, left, right) -> None:
        if isinstance(left, int) and isinstance(right, int):
            self._check_int_bits(left.bit_length() + right.bit_length())
            return
        seq, times = (left, right) if isinstance(right, int) else (right, left)
        if isinstance(times, int) and isinstance(seq, _SEQUENCES):
            self.grow(text_size(seq, self.max_chars) * max(times, 0), "a repeated value")

    def _check_sum(self, left, right) -> None:
        if isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
            limit = self.max_chars
            self.grow(text_size(left, limit) + text_size(right, limit), "a sum")

    def _check_printf(self, left, right) -> None:
        if isinstance(left, (str, bytes)):
            self.grow(printf_size(left, right, self.max_chars), "a formatted string")

    def _check_power(self, left, right) -> None:
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            self._check_int_bits(int(math.log2(abs(left)) * right))

    _binop_checks: ClassVar[dict] = {
        "*": _check_product, "+": _check_sum, "%": _check_printf, "**": _check_power,
    }  # fmt: skip

    def _method_size(self, s, name: str, args, kwargs) -> int:
        limit = self.max_chars
        arg = args[0] if args else None
        if name in ("center", "ljust", "rjust", "zfill"):
            width = kwargs.get("width", arg)
            return max(len(s), width if isinstance(width, int) else 0)
        if name == "expandtabs":
            tabsize = kwargs.get("tabsize", 8 if arg is None else arg)
            tab = "\t" if isinstance(s, str) else b"\t"
            return len(s) + s.count(tab) * max(tabsize if isinstance(tabsize, int) else 0, 0)
        if name == "join":
            items = arg or ()
            return sum(text_size(i, limit) for i in items) + len(s) * max(len(items) - 1, 0)
        if name == "replace" and len(args) >= 2:
            return _replaced_size(s, args[0], args[1], args[2] if len(args) > 2 else -1)
        if name == "translate" and isinstance(arg, dict):
            longest = max((text_size(v, limit) for v in arg.values()), default=1)
            return len(s) * max(longest, 1)
        if name == "format":
            return format_size(s, args, kwargs, limit)
        if name == "format_map":
            return format_size(s, (), arg if isinstance(arg, dict) else {}, limit)
        return len(s)

    def _lipsum(self, n=5, html=True, min=20, max=100):
        self.grow(n * max * 12, "lipsum text")  # words are under 12 characters with spaces
        return generate_lorem_ipsum(n, html, min, max)


class _MessageLimits:
    """Installs a fresh budget for one message in this thread (restores the previous)."""

    __slots__ = ("_env", "_previous")

    def __init__(self, env: BoundedSandbox):
        self._env = env

    def __enter__(self) -> None:
        env = self._env
        self._previous = getattr(env._local, "budget", None)
        env._local.budget = _Budget(
            perf_counter() + env.timeout_seconds, env.max_chars, WORK_FACTOR * env.max_chars
        )

    def __exit__(self, *exc) -> None:
        self._env._local.budget = self._previous


def _replaced_size(s, old, new, count) -> int:
    s, old, new = str(s), str(old), str(new)
    found = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(s) + found * max(len(new) - len(old), 0)


def _bounded_filters(env: BoundedSandbox) -> dict:
    """Jinja's filters that pad, repeat or fill, checked on the size they would build."""
    limit = env.max_chars

    def center(value, width=80):
        env.grow(max(text_size(value, limit), width if isinstance(width, int) else 0), "center")
        return do_center(value, width)

    def indent(s, width=4, first=False, blank=False):
        text = str(s)
        step = width if isinstance(width, int) else len(str(width))
        env.grow(len(text) + (text.count("\n") + 1) * max(step, 0), "indent")
        return do_indent(s, width, first, blank)

    @pass_environment
    def wordwrap(environment, s, width=79, break_long_words=True, wrapstring=None,
                 break_on_hyphens=True):  # fmt: skip
        text = str(s)
        wrap = environment.newline_sequence if wrapstring is None else str(wrapstring)
        lines = len(text) // max(width // 2, 1) + text.count("\n") + 1
        env.grow(len(text) + lines * len(wrap), "wordwrap")
        return do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)

    @pass_eval_context
    def replace(eval_ctx, s, old, new, count=None):
        env.grow(_replaced_size(s, old, new, count), "replace")
        return do_replace(eval_ctx, s, old, new, count)

    def format(value, *args, **kwargs):
        env.grow(printf_size(str(value), kwargs or args, limit), "format")
        return do_format(value, *args, **kwargs)

    @pass_eval_context
    def join(eval_ctx, value, d="", attribute=None):
        if attribute is not None:
            value = map(make_attrgetter(eval_ctx.environment, attribute), value)
        items, size, sep = [], 0, len(str(d))
        for item in value:  # measured one by one: a lazy map may yield large items
            size += text_size(item, limit) + sep
            env.check_size(size, "join")
            items.append(item)
        env.charge(size)
        return sync_do_join(eval_ctx, items, d)

    def batch(value, linecount, fill_with=None):
        if fill_with is not None:
            env.grow(linecount * text_size(fill_with, limit), "batch fill")
        return do_batch(value, linecount, fill_with)

    def slice(value, slices, fill_with=None):
        env.grow(slices * (2 + text_size(fill_with, limit)), "slice")
        return sync_do_slice(value, slices, fill_with)

    @pass_eval_context
    def tojson(eval_ctx, value, indent=None):
        if indent is not None and not 0 <= indent <= MAX_JSON_INDENT:
            raise TemplateError(f"tojson indent must be between 0 and {MAX_JSON_INDENT}")
        env.check_size(text_size(value, limit), "tojson")
        out = do_tojson(eval_ctx, value, indent)
        env.grow(len(out), "tojson")
        return out

    def pprint(value):
        size, depth = measure(value, limit)
        env.grow(size * max(depth, 1), "pprint")  # it formats each level's items again
        return do_pprint(value)

    @pass_environment
    def sum_(environment, iterable, attribute=None, start=0):
        if not isinstance(start, (list, tuple)):
            return sync_do_sum(environment, iterable, attribute, start)
        if attribute is not None:
            iterable = map(make_attrgetter(environment, attribute), iterable)
        items = list(start)
        for part in iterable:  # one pass; Python's sum copies the list at every step
            if not isinstance(part, (list, tuple)):
                raise TypeError(f"sum: cannot add {type(part).__name__} to a list")
            items.extend(part)
            env.check_size(len(items), "sum")
        env.charge(len(items))
        return type(start)(items)

    return {
        "center": center, "indent": indent, "wordwrap": wordwrap, "replace": replace,
        "format": format, "join": join, "batch": batch, "slice": slice, "tojson": tojson,
        "sum": sum_, "pprint": pprint,
    }  # fmt: skip
