"""`make dev` tells how to sign in as the stack it started sees it: the development password
`dev`, or the setting that holds a password the user chose, never that password itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools import devstack
from tests.test_run_targets import clean_env
from tests.test_run_targets import free_port
from tests.test_run_targets import start_dev
from tests.test_run_targets import stop_dev
from tests.test_run_targets import wait_until

CHOSEN = "my-own-dev-password-Zq81"


def test_make_dev_names_a_prefixed_password_without_printing_it(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    env = clean_env(
        REDIS_URL="redis://127.0.0.1:1/0", PYTHONUNBUFFERED="1", FLASK_ADMIN_PASSWORD=CHOSEN
    )
    dev = start_dev(port, log, env, demo_items=300)
    try:
        wait_until(lambda: "Sign in:" in log.read_text() or dev.poll() is not None, 90, "sign-in")
    finally:
        stop_dev(dev)
    output = log.read_text()
    sign_in = [line.split("|", 1)[1].strip() for line in output.splitlines() if "Sign in:" in line]
    assert sign_in == ["Sign in:    admin / the ADMIN_PASSWORD you set"], output[-3000:]
    assert CHOSEN not in output


@pytest.mark.parametrize(
    ("config", "shown"),
    [
        ({"ADMIN_PASSWORD": "dev"}, "dev"),
        ({"ADMIN_PASSWORD": CHOSEN}, "the ADMIN_PASSWORD you set"),
        (
            {"ADMIN_PASSWORD": "dev", "ADMIN_PASSWORD_HASH": "scrypt:..."},
            "the password of the ADMIN_PASSWORD_HASH you set",
        ),
    ],
)
def test_only_the_development_password_is_ever_printed(config: dict[str, str], shown: str) -> None:
    assert devstack.sign_in_password(config) == shown
