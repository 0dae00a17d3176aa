"""HTML pages: dashboard, /updateManifest with live progress, items, history, sign-in."""

from flask import Blueprint

bp = Blueprint("main", __name__)

from app.main import views  # noqa: E402, F401 - registers the views on bp
