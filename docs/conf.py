import inspect
import sys
import typing

project = "flask-eventstream"
copyright = "2026, the flask-eventstream developers"
extensions = ["sphinx.ext.autodoc", "pallets_sphinx_themes"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Types of the parameters a docstring describes: not of the internal ones of
# a constructor users never call (Subscription's hub).
autodoc_typehints_description_target = "documented_params"
html_theme = "flask"
html_title = "flask-eventstream"
exclude_patterns = ["_build"]

# Every reference must resolve (built with -n -W). Those below name other
# projects' objects: their inventories need the network (intersphinx), which
# the build does without, so they are left as text.
nitpicky = True
nitpick_ignore = [
    ("py:class", "Flask"),
    ("py:class", "flask.app.Flask"),
    ("py:exc", "BadRequest"),
    ("py:exc", "Forbidden"),
    ("py:exc", "ServiceUnavailable"),
    ("py:class", "blinker.base.Signal"),
    ("py:class", "httpx.Client"),
    ("py:class", "prometheus_client.multiprocess.MultiProcessCollector"),
]


def _typing_name(app, env, node, contnode):
    """Show as text a name from :mod:`typing`, also as the package writes
    it (``t.Any``), a type variable, and a type alias (the ``StreamView[P]``
    and ``RouteView[P]`` of ``stream``, from the module that defines it):
    Sphinx resolves none, and none names an object to document.
    """
    target = node.get("reftarget", "")
    if target.startswith("t.") and hasattr(typing, target[2:]):
        return contnode
    module, _, name = target.rpartition(".")
    found = getattr(sys.modules.get(module or _ALIASES), name, None)
    if isinstance(found, (typing.TypeVar, typing.ParamSpec)):
        return contnode
    return contnode if typing.get_origin(found) is not None else None


#: The module of the aliases ``stream``'s signature is written with.
_ALIASES = "flask_eventstream.http.views"


def _no_docstring_of_the_type(app, what, name, obj, options, lines):
    """Drop the docstring a constant gets from its type (``str``'s for
    :data:`~flask_eventstream.client.RESET_EVENT`): its own text follows.
    """
    if what == "data" and lines and type(obj).__doc__ is not None:
        if "\n".join(lines).strip() == inspect.cleandoc(type(obj).__doc__):
            lines.clear()


def setup(app):
    app.connect("missing-reference", _typing_name)
    app.connect("autodoc-process-docstring", _no_docstring_of_the_type)
