"""The JSON API under /api/v1: every read with an ETag and Cache-Control (304 to a client that
holds the answer), readable from any origin (CORS); described in openapi.json."""

from flask import Blueprint

bp = Blueprint("api", __name__)

# After bp: these register views on it, or import modules that do.
from app.api import caching  # noqa: E402
from app.api import changes  # noqa: E402, F401 - registers the views on bp
from app.api import cors  # noqa: E402
from app.api import definitions  # noqa: E402, F401 - registers the views on bp
from app.api import views  # noqa: E402, F401 - registers the views on bp

bp.after_request(cors.allow_reads)
# Every answer says how it may be kept: what set nothing (errors, writes) is kept by nobody.
bp.after_request(caching.keep_nothing_unsaid)
