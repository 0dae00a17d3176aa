"""The Bungie-compatible mirror: Bungie's manifest routes (`/Platform/Destiny2/Manifest/...`) and
content files (`/common/destiny2_content/json/...`) answered from the cache, readable from any
origin. Mounted at the root: programs written for Bungie switch by changing their base URL."""

import redis
from flask import Blueprint
from werkzeug.exceptions import HTTPException

from app.mirror import bungie

bp = Blueprint("mirror", __name__)
bp.after_request(bungie.allow_any_origin)
# Bungie's clients parse envelopes and file bodies: the mirror's errors take those shapes, never
# the app's pages.
bp.register_error_handler(HTTPException, bungie.http_error)
bp.register_error_handler(redis.RedisError, bungie.redis_unavailable)
bp.register_error_handler(Exception, bungie.unexpected_error)

from app.mirror import views  # noqa: E402, F401 - registers the views on bp
