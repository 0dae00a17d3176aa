"""HTML pages: dashboard, /updateManifest with live progress, items, history, what changed
(releases, definitions), the Atom feed of releases, players, sign-in."""

from flask import Blueprint

from app.main import presenters

bp = Blueprint("main", __name__)
presenters.register(bp)

from app.main import changes  # noqa: E402, F401 - registers the views on bp
from app.main import feed  # noqa: E402, F401 - registers the views on bp
from app.main import views  # noqa: E402, F401 - registers the views on bp
