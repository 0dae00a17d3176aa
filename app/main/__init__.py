"""HTML pages: dashboard, /updateManifest with live progress, items, history, sign-in."""

from flask import Blueprint

bp = Blueprint("main", __name__)
