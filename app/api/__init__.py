"""The JSON API under /api/v1."""

from flask import Blueprint

bp = Blueprint("api", __name__)

from app.api import changes  # noqa: E402, F401 - registers the views on bp
from app.api import definitions  # noqa: E402, F401 - registers the views on bp
from app.api import views  # noqa: E402, F401 - registers the views on bp
