"""The API's OpenAPI 3.1 description: `openapi.json` beside this module, read once at start and
served as it is (GET /api/v1/openapi.json); tests keep it true to the routes and their answers."""

from __future__ import annotations

import hashlib
from pathlib import Path

PATH = Path(__file__).with_name("openapi.json")
DOCUMENT = PATH.read_bytes()
# The description's own ETag: a digest of its bytes.
DIGEST = hashlib.sha256(DOCUMENT).hexdigest()[:32]
# Names the revision of the answers' shapes in the ETags of the API's other answers: a deploy
# that changes a shape changes the description too, and so every ETag.
REVISION = DIGEST[:8]
